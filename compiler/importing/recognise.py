"""Recognising a template instance in an imported spec: `template:` and the params that
differ from their defaults, when the template with them expands to exactly the same input,
layers and compiled training settings.

Templates are inverted without a per-template table: each param is changed alone, and the
fields of the expansion that change with it are where its value shows. A param that changes
the number of layers (a transformer's num_layers) is solved from the layer count, which
grows linearly with it. Only templates without DP are candidates: a Keras file says
nothing about how a model was trained.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Optional

from compiler.lang.render import flatten

# What a Keras file determines, and so what a recognised template must reproduce exactly.
COMPARED_TRAINING = ("optimizer", "loss", "metrics")


def as_template(explicit: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The template form of `explicit` (a pruned imported spec), or None."""
    from compiler.lang.templates import TEMPLATES

    resolved = _resolved(explicit)
    target = _comparable(resolved, explicit)
    if resolved is None or target is None:
        return None
    for name in TEMPLATES:
        if name.endswith("-dp"):
            continue
        params = _solve(name, resolved, explicit)
        if params is None:
            continue
        document = _template_document(explicit, name, params)
        expanded = _resolved(document)
        if expanded is not None and _comparable(expanded, explicit) == target:
            return document
    return None


def _template_document(explicit: dict[str, Any], name: str, params: dict[str, Any]) -> dict:
    model: dict[str, Any] = {"template": name}
    if params:
        model["params"] = params
    return {"apiVersion": explicit["apiVersion"], "name": explicit["name"], "model": model}


def _resolved(document: dict[str, Any]) -> Optional[dict[str, Any]]:
    from compiler.diagnostics import SpecError
    from compiler.lang.parse import load_spec
    from compiler.lang.render import dump_json, to_data

    try:
        return to_data(load_spec(dump_json(document)))
    except SpecError:
        return None


def _comparable(resolved: Optional[dict[str, Any]], explicit: dict[str, Any]) -> Any:
    """What must match: input, the layers up to their names, and the training settings the
    Keras file gave."""
    if resolved is None:
        return None
    layers = resolved["model"]["layers"]
    index = {layer["name"]: i for i, layer in enumerate(layers)}
    index[resolved["input"]["name"]] = -1
    out_layers = []
    for i, layer in enumerate(layers):
        entry = {k: v for k, v in layer.items() if k not in ("name", "inputs")}
        entry["inputs"] = [index[n] for n in layer["inputs"]] if "inputs" in layer else [i - 1]
        out_layers.append(entry)
    output = resolved["model"].get("output")
    given = explicit.get("training", {})
    training = {k: resolved["training"][k] for k in COMPARED_TRAINING if k in given}
    section = {k: v for k, v in resolved["input"].items() if k != "name"}
    return json.dumps(
        [section, out_layers, index.get(output, len(layers) - 1), training], sort_keys=True
    )


@functools.lru_cache(maxsize=None)
def _sensitivity(name: str) -> dict[str, Any]:
    """Per param: the flattened fields its value shows in (identity params), or the layer
    count at two values (structural params)."""
    from compiler.lang.templates import TEMPLATES

    template = TEMPLATES[name]
    defaults = template.params().model_dump()
    base = _expansion(name, {})
    out: dict[str, Any] = {}
    for param, value in defaults.items():
        changed = _perturbed(value)
        if changed is None:
            continue
        other = _expansion(name, {param: changed})
        if other is None or base is None:
            continue
        if len(other["model"]["layers"]) != len(base["model"]["layers"]):
            two = _expansion(name, {param: value + 1}) if isinstance(value, int) else None
            if two is not None:
                out[param] = (
                    "count",
                    value,
                    len(base["model"]["layers"]),
                    len(two["model"]["layers"]) - len(base["model"]["layers"]),
                )
            continue
        flat_base, flat_other = flatten(base), flatten(other)
        paths = [p for p in flat_base if flat_other.get(p) != flat_base[p]]
        if paths and all(flat_other[p] == changed for p in paths):
            out[param] = ("fields", tuple(paths))
    return out


def _expansion(name: str, params: dict[str, Any]) -> Optional[dict[str, Any]]:
    return _resolved(
        {
            "apiVersion": "keraspec/v1",
            "name": "probe",
            "model": {"template": name, "params": params},
        }
    )


def _perturbed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2  # keeps divisibility (heads into the embedding width)
    if isinstance(value, float):
        return round(value * 0.5 + 0.013, 6)
    if isinstance(value, str):
        return "he_normal" if value != "he_normal" else "lecun_normal"
    return None


def _solve(
    name: str, resolved: dict[str, Any], explicit: dict[str, Any]
) -> Optional[dict[str, Any]]:
    """The params under which `name` would expand to the import (`explicit`, and `resolved`
    its resolved form), from its fields."""
    from compiler.lang.templates import TEMPLATES

    flat = flatten(resolved)
    defaults = TEMPLATES[name].params().model_dump()
    params: dict[str, Any] = {}
    given = tuple(f"training.{k}" for k in explicit.get("training", {}))
    for param, how in _sensitivity(name).items():
        if how[0] == "fields" and not any(
            p.startswith(("input.", "model.") + given) for p in how[1]
        ):
            continue  # shows only in what a Keras file does not hold: left at its default
        if how[0] == "count":
            _, value, count, step = how
            if step <= 0:
                continue
            n = len(resolved["model"]["layers"])
            solved, rest = divmod(n - count, step)
            if rest:
                return None
            params[param] = value + solved
            continue
        values = {json.dumps(flat.get(p)) for p in how[1]}
        if len(values) != 1:
            continue
        value = json.loads(values.pop())
        if value is not None and value != defaults[param]:
            params[param] = value
    return {k: v for k, v in params.items() if v != defaults.get(k)}
