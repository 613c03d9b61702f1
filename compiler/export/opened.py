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
from compiler.export.savedmodel import METADATA_DIR, read_metadata, resolve_export, verify_export
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
        return load_spec(os.path.join(self.metadata_dir, SPEC_FILE))

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
