"""Reading a Keras model's configuration from its file, without running anything in it.

Four formats: a model's JSON (`to_json()`, tf-keras or Keras 3), a Keras 3 `.keras` archive
(a zip whose `config.json` is the model's config), a tf-keras `.h5` file (the config in its
`model_config` attribute) and a SavedModel written by Keras (`keras_metadata.pb`). Only the
configuration is read: nothing is unpickled, no `Lambda`'s bytecode is run and no module a
file names is imported, the stance of Keras' `safe_mode`. JSON and `.keras` need no
TensorFlow; `.h5` needs h5py; a SavedModel's metadata is a protocol buffer of tf-keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Any, Optional

from compiler.diagnostics import Diagnostic, SpecError
from compiler.files import file_sha256

FORMATS = ("json", "keras", "h5", "savedmodel")
MAX_CONFIG_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class KerasFile:
    """A Keras model's configuration as its file holds it.

    Attributes:
        path: The file (or SavedModel directory).
        format: One of FORMATS.
        model: The model's config: {"class_name": ..., "config": {...}}.
        compile: Its compile config (optimizer, loss, metrics), or None.
        sha256: Of the file (a SavedModel: of saved_model.pb and keras_metadata.pb).
    """

    path: str
    format: str
    model: dict[str, Any]
    compile: Optional[dict[str, Any]]
    sha256: str


def refusal(path: str, field: str, message: str, code: str = "import_unreadable") -> SpecError:
    """A located import error: the model file and the path of the field inside it."""
    return SpecError([Diagnostic("error", code, message, field, path)])


def read_keras_file(path: str) -> KerasFile:
    """The configuration of the Keras model at `path`, in any of FORMATS.

    Raises:
        SpecError: the file is missing, unreadable, or not a Keras model's config.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _saved_model(path)
    if not os.path.isfile(path):
        raise refusal(path, "", "expected a Keras model file, received a path that does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        return _keras_archive(path)
    if head.startswith(b"\x89HDF"):
        return _h5(path)
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise refusal(path, "", f"expected a model config of at most {MAX_CONFIG_BYTES} bytes")
    with open(path, "rb") as f:
        data = f.read()
    return KerasFile(path, "json", _json(path, data, ""), None, hashlib.sha256(data).hexdigest())


def _json(path: str, data: Any, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise refusal(path, where, f"expected a Keras model's JSON config, received {e}") from None
    if not isinstance(value, dict) or "class_name" not in value or "config" not in value:
        raise refusal(
            path,
            where,
            'expected a Keras model\'s config ({"class_name": ..., "config": ...}), '
            f"received {type(value).__name__}",
        )
    return value


def _keras_archive(path: str) -> KerasFile:
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise refusal(path, "config.json", "expected a config of at most 64 MiB")
            data = archive.read(info)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise refusal(
            path, "config.json", f"expected a .keras archive holding config.json ({e})"
        ) from None
    model = _json(path, data, "config.json")
    compile_config = model.get("compile_config")
    return KerasFile(path, "keras", model, compile_config, file_sha256(path))


def _h5(path: str) -> KerasFile:
    try:
        import h5py
    except ImportError:  # pragma: no cover - installed with TensorFlow
        raise refusal(path, "", "expected h5py to read a .h5 model: pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            model_config = f.attrs.get("model_config")
            training_config = f.attrs.get("training_config")
    except OSError as e:
        raise refusal(path, "", f"expected a readable HDF5 model file ({e})") from None
    if model_config is None:
        raise refusal(
            path,
            "model_config",
            "expected a Keras model saved whole (model.save), received an HDF5 file without "
            "its model_config (weights only?)",
        )
    model = _json(path, _text(model_config), "model_config")
    compile_config = None
    if training_config is not None:
        compile_config = _compile_config(json.loads(_text(training_config)))
    return KerasFile(path, "h5", model, compile_config, file_sha256(path))


def _compile_config(training: dict[str, Any]) -> dict[str, Any]:
    """A tf-keras training_config (.h5 attribute, SavedModel metadata) as a compile config."""
    return {
        "optimizer": training.get("optimizer_config"),
        "loss": training.get("loss"),
        "metrics": training.get("metrics"),
    }


def _untuple(value: Any) -> Any:
    """The SavedModel metadata's tuples ({"class_name": "__tuple__", "items": [...]}) as lists."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__" and "items" in value:
            return [_untuple(v) for v in value["items"]]
        return {k: _untuple(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untuple(v) for v in value]
    return value


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _saved_model(path: str) -> KerasFile:
    metadata_path = os.path.join(path, "keras_metadata.pb")
    if not os.path.isfile(metadata_path):
        raise refusal(
            path,
            "keras_metadata.pb",
            "expected a SavedModel written by Keras (with keras_metadata.pb), received a "
            "directory without it",
        )
    from compiler.tf import tensorflow

    tensorflow()
    from tf_keras.protobuf import saved_metadata_pb2

    proto = saved_metadata_pb2.SavedMetadata()
    with open(metadata_path, "rb") as f:
        data = f.read()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # a protobuf DecodeError
        raise refusal(path, "keras_metadata.pb", f"expected Keras metadata ({e})") from None
    root = next((node for node in proto.nodes if node.node_path == "root"), None)
    if root is None:
        raise refusal(path, "keras_metadata.pb", "expected the model's node (root)")
    metadata = json.loads(root.metadata)
    if "config" not in metadata:
        raise refusal(
            path,
            "keras_metadata.pb",
            "expected a model saved with its config (get_config), received a subclassed "
            "model's metadata without one",
        )
    metadata = _untuple(metadata)
    model = {"class_name": metadata.get("class_name"), "config": metadata["config"]}
    training = metadata.get("training_config")
    compile_config = _compile_config(training) if training else None
    sha = hashlib.sha256(data)
    pb = os.path.join(path, "saved_model.pb")
    if os.path.isfile(pb):
        sha.update(bytes.fromhex(file_sha256(pb)))
    return KerasFile(path, "savedmodel", model, compile_config, sha.hexdigest())
