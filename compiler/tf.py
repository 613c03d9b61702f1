"""The one place TensorFlow is imported, configured for tf-keras and tensorflow-privacy.

Three settings must be in force before TensorFlow's first import, or DP training breaks:
`TF_USE_LEGACY_KERAS=1` makes `tf.keras` the Keras 2 API (tf-keras) that tensorflow-privacy
supports; `sys.skip_tf_privacy_import` stops tensorflow_privacy's `__init__` from importing
the estimator API removed in TF 2.16; the C++ log level keeps TensorFlow's start-up noise out
of the user's terminal (keraspec's own diagnostics are printed by the CLI, not logged).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from types import ModuleType
from typing import Iterator

from compiler.diagnostics import CompileError, Diagnostic


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while TensorFlow's native libraries load.

    Their start-up lines (oneDNN, CUDA probing) are written by C++ before any log level
    applies. What was written is replayed if the import fails, so nothing useful is lost.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def tensorflow() -> ModuleType:
    """Import and return TensorFlow, configured for tf-keras.

    Raises:
        CompileError: when TensorFlow was already imported with Keras 3 as `tf.keras`.
    """
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        # 3: also the "failed call to cuInit" error every CPU-only machine logs.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.skip_tf_privacy_import = True  # type: ignore[attr-defined]
    with _quiet_stderr():
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with tensorflow
        pass
    if not tf.keras.__name__.startswith("tf_keras"):
        raise CompileError(
            [
                Diagnostic(
                    "error",
                    "keras3",
                    "expected tf.keras to be tf-keras (Keras 2), received "
                    f"{tf.keras.__name__}: TensorFlow was imported before keraspec could set "
                    "TF_USE_LEGACY_KERAS=1; set it in the environment or import compiler first",
                    file="<environment>",
                )
            ]
        )
    return tf


def tf_privacy_optimizers() -> tuple[ModuleType, ModuleType]:
    """tensorflow-privacy's Keras optimizer factories (standard, vectorized)."""
    tensorflow()
    sys.skip_tf_privacy_import = True  # type: ignore[attr-defined]
    # The factories are current API, but warn of a deprecation on every call.
    warnings.filterwarnings(
        "ignore", message=r".*make_(vectorized_)?keras_optimizer_class.*", category=UserWarning
    )
    with _quiet_stderr():
        from tensorflow_privacy.privacy.optimizers import (
            dp_optimizer_keras,
            dp_optimizer_keras_vectorized,
        )

    return dp_optimizer_keras, dp_optimizer_keras_vectorized
