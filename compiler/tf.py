"""The one place TensorFlow, tf-keras and tensorflow-privacy are imported.

keraspec builds with tf-keras (Keras 2), imported as its own package, `tf_keras`: never
through `tf.keras`, whose meaning depends on `TF_USE_LEGACY_KERAS` and is the user's to
choose. keraspec never sets that variable, so a program using Keras 3 keeps `tf.keras` and
`keras` as they were, and can call keraspec before or after building its own models.
tensorflow-privacy's optimizers are given tf-keras classes and work either way (measured: the
same weights after a step with `tf.keras` as Keras 3 or as tf-keras).

Nothing here changes the process's environment or logging: the CLI, which owns its process,
quiets TensorFlow itself (`compiler.cli.app`). The library only keeps TensorFlow's native
start-up lines (oneDNN, CUDA probing, written by C++ before any log level applies) off
stderr while it is imported, and replays them if the import fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from types import ModuleType
from typing import Iterator


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
    """Import and return TensorFlow."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _quiet_stderr():
        import tensorflow as tf
    return tf


def tf_keras() -> ModuleType:
    """Import and return tf-keras (Keras 2), whatever `tf.keras` is in this process."""
    tensorflow()
    import tf_keras as keras

    return keras


def tf_privacy_optimizers() -> tuple[ModuleType, ModuleType]:
    """tensorflow-privacy's Keras optimizer factories (standard, vectorized).

    Its package `__init__` imports the estimator API TensorFlow 2.16 removed; the library's
    own switch, `sys.skip_tf_privacy_import`, skips it, and the factories are imported from
    their modules.
    """
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
