"""An export, as the stages that use one read it: generation, evaluate and inspect.

`open_export` is `open_trained`'s counterpart for `BASE/NAME[/VERSION]`: it resolves the
version, checks every file against the digests written with it, and reads what keraspec
wrote beside the SavedModel (export.json, the resolved spec, the validators). No
TensorFlow: a reader loads the SavedModel itself when it needs to run it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

from compiler.data.columns import Validators, load_validators
from compiler.data.tokenizer import Tokenizer, load_tokenizer
from compiler.diagnostics import Diagnostic, RunError
from compiler.export.savedmodel import (
    METADATA_DIR,
    directory_size,
    read_metadata,
    resolve_export,
    verify_export,
)
from compiler.lang.checked import CheckedSpec
from compiler.lang.parse import load_spec
from compiler.training.rundir import SPEC_FILE


@dataclasses.dataclass(frozen=True)
class OpenedExport:
    """One version of an export.

    Attributes:
        version_dir: BASE/NAME/VERSION.
        metadata: The export.json keraspec wrote ({} for a SavedModel written elsewhere).
        spec_text: The resolved spec it was exported from (None for another SavedModel).
    """

    version_dir: str
    metadata: dict[str, Any]
    spec_text: Optional[str]

    @property
    def name(self) -> str:
        return os.path.basename(os.path.dirname(os.path.abspath(self.version_dir)))

    @property
    def version(self) -> int:
        return int(os.path.basename(self.version_dir))

    @property
    def step(self) -> Optional[int]:
        return self.metadata.get("step")

    @property
    def run(self) -> dict[str, Any]:
        """What the export kept of its run: corpus digest, seed, privacy ({} if none)."""
        return self.metadata.get("run") or {}

    @property
    def metadata_dir(self) -> str:
        return os.path.join(self.version_dir, METADATA_DIR)

    def spec(self) -> CheckedSpec:
        """The checked spec it was exported from.

        Raises:
            RunError: the SavedModel was not written by keraspec export.
        """
        if self.spec_text is None:
            raise RunError(
                [
                    Diagnostic(
                        "error",
                        "not_a_keraspec_export",
                        "expected an export written by keraspec export (with "
                        f"{os.path.join(METADATA_DIR, SPEC_FILE)}), received a SavedModel "
                        "without it",
                        "",
                        self.version_dir,
                    )
                ]
            )
        # The text read when the export was opened (a spec file's text always has lines).
        return load_spec(self.spec_text, name=os.path.join(self.metadata_dir, SPEC_FILE))

    def validators(self) -> Optional[Validators]:
        """The column rules of its run (the field count only, or None, without them)."""
        return load_validators(self.metadata_dir, self.metadata.get("record_shape"))

    def tokenizer(self) -> Tokenizer:
        """The tokenizer in its assets."""
        return load_tokenizer(os.path.join(self.version_dir, "assets"))


def open_export(path: Union[str, os.PathLike[str]]) -> Optional[OpenedExport]:
    """The export at `path` (BASE/NAME, its highest version, or BASE/NAME/VERSION).

    Returns:
        None when `path` is not an export.

    Raises:
        ExportError: a file of the export is missing or not what was exported.
    """
    version_dir = resolve_export(path)
    if version_dir is None:
        return None
    verify_export(version_dir)  # a truncated or edited file: an error naming it
    spec_path = os.path.join(version_dir, METADATA_DIR, SPEC_FILE)
    spec_text = None
    if os.path.isfile(spec_path):
        with open(spec_path, encoding="utf-8") as f:
            spec_text = f.read()
    return OpenedExport(version_dir, read_metadata(version_dir), spec_text)


def inspect_export(path: Union[str, os.PathLike[str]]) -> Optional[dict[str, Any]]:
    """An export's name, version, size, signatures (from its SignatureDefs) and spec.

    Returns:
        None when `path` is not an export.

    Raises:
        ExportError: a file of the export is missing or not what was exported.
    """
    from compiler.tf import tensorflow

    opened = open_export(path)
    if opened is None:
        return None
    version_dir = opened.version_dir
    tf = tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())

    def describe(tensors: Any) -> dict[str, list[Any]]:
        return {
            key: [
                tf.dtypes.as_dtype(info.dtype).name,
                (
                    None
                    if info.tensor_shape.unknown_rank
                    else [None if d.size < 0 else d.size for d in info.tensor_shape.dim]
                ),
            ]
            for key, info in sorted(tensors.items())
        }

    signatures = {
        name: {"inputs": describe(sig.inputs), "outputs": describe(sig.outputs)}
        for meta in saved.meta_graphs
        for name, sig in sorted(meta.signature_def.items())
        if not name.startswith("__")
    }
    return {
        "name": opened.name,
        "version": opened.version,
        "path": version_dir,
        "size_bytes": directory_size(version_dir),
        "step": opened.step,
        "tokenizer": opened.metadata.get("tokenizer"),
        "record_shape": opened.metadata.get("record_shape"),
        "signatures": signatures,
        "spec": opened.spec_text,
    }
