"""keraspec: a declarative architecture spec compiler for Keras and TensorFlow.

The spec half (loading, validating, rendering) never imports TensorFlow; the compile half
is imported on first use.
"""

from compiler.diagnostics import (
    CompileError,
    DataError,
    Diagnostic,
    ExportError,
    KeraspecError,
    RunError,
    SpecError,
)
from compiler.lang.checked import CheckedSpec
from compiler.lang.parse import Validation, load_spec, validate
from compiler.lang.spec import Spec

__version__ = "0.1.0"

# Attributes that import TensorFlow (or dp_accounting) are loaded on first use, so that
# `import compiler` and the spec half stay fast.
_LAZY = {
    "compile_spec": ("compiler.build", "compile_spec"),
    "CompiledModel": ("compiler.build", "CompiledModel"),
    "custom_objects": ("compiler.layers", "custom_objects"),
    "privacy": ("compiler.privacy", None),
    "train": ("compiler.training", "train"),
    "TrainReport": ("compiler.training", "TrainReport"),
    "generate": ("compiler.generation", "generate"),
    "ValidRecordsExhausted": ("compiler.generation", "ValidRecordsExhausted"),
    "export_saved_model": ("compiler.export.savedmodel", "export_saved_model"),
    "ExportReport": ("compiler.export.savedmodel", "ExportReport"),
    "audit": ("compiler.evaluate.audit", "audit"),
    "AuditReport": ("compiler.evaluate.audit", "AuditReport"),
    "import_model": ("compiler.importing", "import_model"),
    "import_run": ("compiler.importing.weights", "import_run"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'compiler' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


__all__ = [
    "audit",
    "import_model",
    "import_run",
    "AuditReport",
    "CheckedSpec",
    "CompileError",
    "CompiledModel",
    "compile_spec",
    "custom_objects",
    "DataError",
    "generate",
    "RunError",
    "train",
    "TrainReport",
    "privacy",
    "Diagnostic",
    "ExportError",
    "export_saved_model",
    "ExportReport",
    "KeraspecError",
    "Spec",
    "SpecError",
    "Validation",
    "ValidRecordsExhausted",
    "load_spec",
    "validate",
]
