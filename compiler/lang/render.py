"""Rendering: a resolved spec back to YAML or JSON text, in its fully explicit form."""

from __future__ import annotations

import io
import json
from typing import Any, Union

from compiler.lang.checked import CheckedSpec, spec_of
from compiler.lang.spec import Spec, distribution_summary

_FIRST = ("type", "name", "inputs")


def to_data(spec: Union[Spec, CheckedSpec]) -> dict[str, Any]:
    """The spec as plain data: every default filled, nulls left out, `type` keys first."""
    return _order(spec_of(spec).model_dump(mode="json", exclude_none=True))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested data as {dotted.path: value}, lists indexed as in the spec's paths."""
    out: dict[str, Any] = {}
    if isinstance(data, dict) and data:
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list) and data:
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = data
    return out


def _order(node: Any) -> Any:
    if isinstance(node, dict) and "type" in node:
        first = [k for k in _FIRST if k in node]
        keys = first + [k for k in node if k not in first]
        return {k: _order(node[k]) for k in keys}
    if isinstance(node, dict):
        return {k: _order(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_order(v) for v in node]
    return node


def dump_yaml(data: Any, header: str = "") -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    out = io.StringIO()
    if header:
        out.write(header.rstrip("\n") + "\n")
    yaml.dump(data, out)
    return out.getvalue()


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def render(spec: Spec, fmt: str = "yaml") -> str:
    """Render a resolved spec as `yaml` or `json` text that validates to the same spec."""
    data = to_data(spec)
    return dump_json(data) if fmt == "json" else dump_yaml(data, _distribution_note(spec))


def _distribution_note(spec: Spec) -> str:
    d = distribution_summary(spec)
    if d is None or d["replicas"] == 1:
        return ""
    note = (
        f"# distribution: {d['replicas']} replicas, each training on {d['replica_batch']} "
        f"examples of the global batch of {d['global_batch']}"
    )
    if d["stateful"]:
        note += f";\n# stateful layers are built for the per-replica batch of {d['replica_batch']}"
    return note
