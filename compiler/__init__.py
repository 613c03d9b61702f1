"""keraspec: a declarative architecture spec compiler for Keras and TensorFlow.

The spec half (loading, validating, rendering) never imports TensorFlow; the compile half
is imported on first use.
"""

from compiler.diagnostics import (
    CompileError,
    Diagnostic,
    ExportError,
    KeraspecError,
    SpecError,
)
from compiler.parse import Validation, load_spec, validate
from compiler.spec import Spec

__version__ = "0.1.0"

__all__ = [
    "CompileError",
    "Diagnostic",
    "ExportError",
    "KeraspecError",
    "Spec",
    "SpecError",
    "Validation",
    "load_spec",
    "validate",
]
