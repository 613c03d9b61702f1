"""The published JSON Schema, generated from the typed models in `compiler.lang.spec`."""

from __future__ import annotations

import json
from typing import Any

SCHEMA_FILE = "keraspec.schema.json"
SCHEMA_PATH = "schema/" + SCHEMA_FILE
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (template or explicit layer form)."""
    from compiler.lang.spec import API_VERSION, DOCUMENT

    schema = DOCUMENT.json_schema(mode="validation")
    return {
        "$schema": DIALECT,
        "title": "keraspec spec",
        "description": f"A model architecture spec, {API_VERSION}: a template with params, "
        "or an explicit graph of layers.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
