"""The published JSON Schema, generated from the typed models in `compiler.lang.spec`.

Field descriptions are the attribute docstrings of the models (a string right after a
field) or their `Field(description=...)`. The docstrings are read here, when a schema is
generated, not when the models are defined: reading every class's source costs more than
the rest of loading a spec, and validating one never needs them.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import textwrap
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

SCHEMA_FILE = "keraspec.schema.json"
SCHEMA_PATH = "schema/" + SCHEMA_FILE
DIALECT = "https://json-schema.org/draft/2020-12/schema"


@functools.cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstrings of a class body's annotated attributes, by attribute name."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made by create_model, or no source
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    found = {}
    for field, after in zip(body, body[1:]):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[field.target.id] = inspect.cleandoc(after.value.value)
    return found


def field_docs(model: type) -> dict[str, str]:
    """A model's field docstrings, its bases' included; a patch model (any subset of other
    models' fields) takes those of the models it patches (`__patched__`)."""
    docs: dict[str, str] = {}
    for source in getattr(model, "__patched__", (model,)):
        own: dict[str, str] = {}
        for cls in reversed(source.__mro__):
            own.update(attribute_docstrings(cls))  # a subclass's docstring wins
        for name, doc in own.items():
            docs.setdefault(name, doc)  # the first patched model's wins
    return docs


class DocumentedSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, with each field's docstring as its description."""

    def model_schema(self, schema: Any) -> Any:
        json_schema = super().model_schema(schema)
        docs = field_docs(schema["cls"])
        for name, prop in json_schema.get("properties", {}).items():
            if name in docs and "description" not in prop:
                prop["description"] = docs[name]
        return json_schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (template or explicit layer form)."""
    from compiler.lang.spec import API_VERSION, DOCUMENT

    schema = DOCUMENT.json_schema(mode="validation", schema_generator=DocumentedSchema)
    return {
        "$schema": DIALECT,
        "title": "keraspec spec",
        "description": f"A model architecture spec, {API_VERSION}: a template with params, "
        "or an explicit graph of layers.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
