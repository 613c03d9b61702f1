"""What TF Serving reads beside a model's versions: the base's models.config, updated under a
lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any, Iterator

from compiler.diagnostics import Diagnostic, ExportError
from compiler.files import (
    write_atomic,
)

BASE_LOCK = ".keraspec.lock"


MODELS_CONFIG = "models.config"


def _error(code: str, message: str, where: str, path: str = "") -> ExportError:
    return ExportError([Diagnostic("error", code, message, path, where)])


@contextlib.contextmanager
def base_lock(base: str) -> Iterator[None]:
    """Hold BASE's lock (an OS file lock on BASE/.keraspec.lock) while its shared files,
    models.config and batching_parameters.txt, are read, changed and replaced."""
    os.makedirs(base, exist_ok=True)
    fd = os.open(os.path.join(base, BASE_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_models_config(base: str) -> Any:
    """BASE/models.config as a ModelServerConfig (empty when there is none).

    Raises:
        ExportError: it exists and does not parse.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = os.path.join(base, MODELS_CONFIG)
    config = model_server_config_pb2.ModelServerConfig()
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                text_format.Parse(f.read(), config)
        except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
            raise _error(
                "models_config",
                f"expected a ModelServerConfig text proto, "
                f"received one that does not parse ({e}); fix or remove it: nothing "
                "was exported",
                path,
            ) from e
    return config


def update_models_config(base: str, name: str, serving_root: str) -> str:
    """Create or update BASE/models.config (TF Serving's model_config_list) to list NAME.

    Call it holding `base_lock`: concurrent exports then each add their entry.

    Raises:
        ExportError: an existing models.config does not parse.
    """
    from google.protobuf import text_format

    path = os.path.join(base, MODELS_CONFIG)
    config = read_models_config(base)
    entries = config.model_config_list.config
    base_path = f"{serving_root.rstrip('/')}/{name}"
    for entry in entries:
        if entry.name == name:
            entry.base_path = base_path
            entry.model_platform = "tensorflow"
            break
    else:
        entries.add(name=name, base_path=base_path, model_platform="tensorflow")
    write_atomic(path, text_format.MessageToString(config))
    return path
