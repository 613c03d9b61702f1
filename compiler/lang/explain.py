"""`keraspec explain PATH`: a spec field's documentation, from the published JSON Schema.

A path is the spec's own dotted path: `training.privacy.noise_multiplier`,
`model.layers.units` (or `model.layers[0].units`: an index reads as "an item"),
`model.params.rnn_units`. A field that several types share (the `units` of the recurrent
and dense layers) is shown once per type. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Optional

from compiler.diagnostics import Diagnostic, SpecError


@dataclasses.dataclass(frozen=True)
class Field:
    """One field as the schema documents it."""

    path: str
    owner: str  # the type it belongs to, e.g. LSTMLayer
    type: str  # e.g. "integer > 0", "one of: pld, rdp", "object"
    default: Optional[str]  # JSON text of the default; None when required or absent
    required: bool
    description: str
    fields: list[tuple[str, str, str]]  # for an object: (name, type, first sentence)


def explain(path: str) -> list[Field]:
    """The fields `path` names, one per type that has it.

    Raises:
        SpecError: no field has this path; suggests the nearest names.
    """
    from compiler.lang.schema import json_schema

    schema = json_schema()
    defs = schema.get("$defs", {})
    segments = [s for s in re.split(r"\.|\[\d*\]", path.strip()) if s] if path.strip() else []
    # Each candidate: (owner type name, property schema, required, the object it is in).
    current: list[tuple[str, dict[str, Any], bool]] = [("spec", schema, True)]
    walked: list[str] = []
    for segment in segments:
        found: list[tuple[str, dict[str, Any], bool]] = []
        names: set[str] = set()
        for _, node, _ in current:
            for owner, obj in _objects(node, defs):
                properties = obj.get("properties", {})
                names.update(properties)
                if segment in properties:
                    found.append((owner, properties[segment], segment in obj.get("required", [])))
        if not found:
            where = ".".join(walked) or "a spec"
            close = difflib.get_close_matches(segment, sorted(names), n=3, cutoff=0.5)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else (f"; its fields: {', '.join(sorted(names))}" if names else "")
            )
            raise SpecError(
                [
                    Diagnostic(
                        "error",
                        "unknown_field",
                        f"expected a field of {where}, received {segment!r}" f"{hint}",
                        ".".join(walked + [segment]),
                        "<explain>",
                    )
                ]
            )
        walked.append(segment)
        current = found
    # A template's partial sections (the *Patch types) document the same fields as the full
    # types: show the full ones.
    full = [c for c in current if not c[0].endswith("Patch")]
    out: list[Field] = []
    for owner, node, required in full or current:
        item = _describe(".".join(walked) or "spec", owner, node, required, defs)
        same = next(
            (
                i
                for i, o in enumerate(out)
                if (o.type, o.default, o.description, o.fields)
                == (item.type, item.default, item.description, item.fields)
            ),
            None,
        )
        if same is None:
            out.append(item)
        elif owner not in out[same].owner.split(", "):
            # One field shared by several types (the recurrent layers' units): one entry.
            out[same] = dataclasses.replace(out[same], owner=f"{out[same].owner}, {owner}")
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = ""
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = defs[name]
    return name, node


def _members(node: dict[str, Any], defs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The alternatives a schema node stands for (unions and nullables expanded)."""
    name, node = _resolve(node, defs)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in node:
            return [m for sub in node[key] for m in _members(sub, defs)]
    return [(name or node.get("title", ""), node)]


def _objects(node: dict[str, Any], defs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The object types a field's value may be (through lists and unions)."""
    out = []
    for name, member in _members(node, defs):
        if member.get("type") == "array" and "items" in member:
            out += _objects(member["items"], defs)
        elif "properties" in member:
            out.append((name, member))
    return out


def _type_text(node: dict[str, Any], defs: dict[str, Any]) -> str:
    parts = []
    for name, member in _members(node, defs):
        if "const" in member:
            parts.append(repr(member["const"]))
        elif "enum" in member:
            parts.append("one of: " + ", ".join(map(str, member["enum"])))
        elif member.get("type") == "array":
            parts.append(f"list of {_type_text(member.get('items', {}), defs)}")
        elif "properties" in member:
            parts.append(name or "object")
        else:
            text = str(member.get("type", "any"))
            bounds = [
                f"{op} {member[k]}"
                for k, op in (
                    ("exclusiveMinimum", ">"),
                    ("minimum", ">="),
                    ("exclusiveMaximum", "<"),
                    ("maximum", "<="),
                    ("minLength", "length >="),
                    ("maxLength", "length <="),
                    ("minItems", "items >="),
                    ("maxItems", "items <="),
                )
                if k in member
            ]
            if "pattern" in member:
                bounds.append(f"matching {member['pattern']}")
            parts.append(text + (f" ({', '.join(bounds)})" if bounds else ""))
    return " or ".join(dict.fromkeys(parts))


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.;])\s", text.strip(), maxsplit=1)[0] if text else ""


def _describe(
    path: str, owner: str, node: dict[str, Any], required: bool, defs: dict[str, Any]
) -> Field:
    import json

    description = node.get("description", "")
    objects = _objects(node, defs)
    if not description and len(objects) == 1:
        description = objects[0][1].get("description", "")
    fields, named = [], set()
    for owner_name, obj in objects:
        if owner_name.endswith("Patch") and len(objects) > 1:
            continue
        for name, sub in obj.get("properties", {}).items():
            if name not in named:
                named.add(name)
                fields.append(
                    (name, _type_text(sub, defs), _first_sentence(sub.get("description", "")))
                )
    default = json.dumps(node["default"]) if "default" in node else None
    return Field(path, owner, _type_text(node, defs), default, required, description, fields)


def model_fields(model: Any) -> list[tuple[str, str, Any, str]]:
    """A pydantic model's fields as (name, full type, default, description), from its JSON
    Schema: what `keraspec templates` shows of a template's params."""
    from compiler.lang.schema import DocumentedSchema

    schema = model.model_json_schema(schema_generator=DocumentedSchema)
    defs = schema.get("$defs", {})
    return [
        (name, _type_text(prop, defs), prop.get("default"), prop.get("description", ""))
        for name, prop in schema.get("properties", {}).items()
    ]


def layer_reference() -> list[tuple[str, str, list[tuple[str, str, Optional[str], str]]]]:
    """Every registered layer type as the schema documents it: (type, description, fields),
    each field as (name, type, JSON default or None when required, description)."""
    import json

    from compiler.lang.schema import json_schema
    from compiler.layers import LAYER_TYPES

    defs = json_schema().get("$defs", {})
    out = []
    for type_name, cls in LAYER_TYPES.items():
        node = defs[cls.__name__]
        required = set(node.get("required", []))
        fields = [
            (
                name,
                _type_text(prop, defs),
                None if name in required else json.dumps(prop.get("default")),
                prop.get("description", ""),
            )
            for name, prop in node.get("properties", {}).items()
        ]
        out.append((type_name, node.get("description", ""), fields))
    return out
