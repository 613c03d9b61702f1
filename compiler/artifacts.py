"""Writing a compiled model's description to a directory, atomically."""

from __future__ import annotations

import json
import os
from typing import Union

from compiler.build import CompiledModel
from compiler.diagnostics import Diagnostic, ExportError
from compiler.files import atomic_directory
from compiler.lang.render import dump_yaml, to_data

COMPILE_FILES = ("model.json", "optimizer.json", "spec.resolved.yaml", "summary.txt")


def write_compiled(compiled: CompiledModel, directory: Union[str, os.PathLike[str]]) -> None:
    """Write model.json (Keras `to_json`), optimizer.json, spec.resolved.yaml, summary.txt.

    The directory appears complete or not at all; an existing one is replaced.
    """
    contents = {
        "model.json": json.dumps(json.loads(compiled.model.to_json()), indent=2) + "\n",
        "optimizer.json": json.dumps(compiled.optimizer_config(), indent=2) + "\n",
        "spec.resolved.yaml": dump_yaml(to_data(compiled.spec)),
        "summary.txt": compiled.summary_text(),
    }
    try:
        with atomic_directory(directory) as tmp:
            for name, text in contents.items():
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    f.write(text)
    except OSError as e:
        raise ExportError(
            [
                Diagnostic(
                    "error",
                    "write_failed",
                    f"expected a writable directory, received: {e.strerror or e}",
                    file=os.fspath(directory),
                )
            ]
        ) from e
