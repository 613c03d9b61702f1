"""`keraspec import`: an existing Keras model to a checked-in spec.

- `formats`: the model's config from its file (JSON, `.keras`, `.h5`, SavedModel), read
  without running anything in it;
- `mapping`: the graph, each layer through the registry (`LayerBase.from_keras`), and the
  compile config;
- here: the spec as written by hand (defaults left out, a template recognised) and
  `import_model`, the Python API.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from compiler.importing.formats import KerasFile, read_keras_file
from compiler.importing.mapping import API_VERSION, Reader, read_graph, read_training
from compiler.lang.checked import CheckedSpec


def import_document(
    path: Union[str, os.PathLike[str]],
    *,
    name: Optional[str] = None,
    templates: bool = True,
) -> dict[str, Any]:
    """The spec of the Keras model at `path`, as data: what `keraspec import` writes.

    Raises:
        SpecError: the file is unreadable, or the model holds what the spec language cannot
            express (located at the field of the file that holds it).
    """
    source = read_keras_file(os.fspath(path))
    return document_of(source, name=name, templates=templates)


def document_of(source: KerasFile, *, name: Optional[str], templates: bool) -> dict[str, Any]:
    reader = Reader(source)
    graph = read_graph(reader)
    training = read_training(reader)
    data: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "name": name or _model_name(source),
        **graph,
    }
    context = _context_length(graph["model"]["layers"])
    if context is not None:
        # Training windows must fit the position table; the file does not say their length.
        training.setdefault("sequence_length", context)
    if training:
        data["training"] = training
    explicit = _pruned(data)
    if templates:
        from compiler.importing.recognise import as_template

        matched = as_template(explicit)
        if matched is not None:
            return matched
    return explicit


def import_model(
    path: Union[str, os.PathLike[str]],
    *,
    name: Optional[str] = None,
    templates: bool = True,
) -> CheckedSpec:
    """The Keras model at `path` as a checked spec (`keraspec import`'s Python API).

    Args:
        path: A model's JSON (`to_json()`, tf-keras or Keras 3), a `.keras` archive, a
            tf-keras `.h5` file or a SavedModel directory written by Keras.
        name: The spec's name (default: the model's, made a valid spec name).
        templates: Recognise a template instance (`template:` plus the params that
            differ); False gives the explicit layer list.

    Raises:
        SpecError: as `import_document`.
    """
    from compiler.lang.parse import load_spec
    from compiler.lang.render import dump_json

    return load_spec(dump_json(import_document(path, name=name, templates=templates)))


def _context_length(layers: list[dict[str, Any]]) -> Optional[int]:
    """The fewest positions a layer can place (a position table's rows), or None."""
    from compiler.layers import LAYER_TYPES

    lengths = []
    for layer in layers:
        fields = {k: v for k, v in layer.items() if k != "inputs"}
        length = LAYER_TYPES[layer["type"]].model_validate(fields).context_length()
        if length is not None:
            lengths.append(length)
    return min(lengths) if lengths else None


def _model_name(source: KerasFile) -> str:
    import re

    name = str((source.model.get("config") or {}).get("name") or "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", name):
        stem = os.path.splitext(os.path.basename(source.path.rstrip("/")))[0]
        name = re.sub(r"[^A-Za-z0-9_-]", "-", stem).strip("-_") or "imported"
    return name[:63]


# ------------------------------------------------------------------------------ defaults


def _pruned(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without what equals the schema's defaults, as a spec written by hand."""
    from compiler.lang import spec as s
    from compiler.layers import LAYER_TYPES

    out = dict(data)
    section = dict(data["input"])
    if section.get("name") == "tokens":  # the input's default name
        del section["name"]
    out["input"] = section
    layers = []
    for layer in data["model"]["layers"]:
        fields = LAYER_TYPES[layer["type"]].model_fields
        kept = {
            key: value
            for key, value in layer.items()
            if key in ("type", "name", "inputs")
            or fields[key].is_required()
            or value != fields[key].default
        }
        layers.append(kept)
    _drop_default_names(layers, data["model"].get("output"))
    out["model"] = {**data["model"], "layers": layers}
    training = dict(data.get("training") or {})
    defaults = s.TrainingSpec()
    optimizer = training.get("optimizer")
    if optimizer is not None:
        model = s.OPTIMIZER_MODELS[optimizer["type"]]
        kept = {
            k: v for k, v in optimizer.items() if k == "type" or v != model.model_fields[k].default
        }
        if kept == {"type": defaults.optimizer.type}:
            del training["optimizer"]
        else:
            training["optimizer"] = kept
    if training.get("loss") == defaults.loss.model_dump():
        del training["loss"]
    if training.get("metrics") == defaults.metrics:
        del training["metrics"]
    if training:
        out["training"] = training
    else:
        out.pop("training", None)
    return out


def _drop_default_names(layers: list[dict[str, Any]], output: Optional[str]) -> None:
    """Leave out the names the spec would give anyway (`type`, `type_1`, ...); keep those a
    layer's `inputs` or the model's output refer to, for the reader."""
    from compiler.lang.checks import layer_names

    referred = {n for layer in layers for n in layer.get("inputs", [])} | {output}
    keep = [layer["name"] in referred for layer in layers]
    for _ in range(len(layers) + 1):
        assigned = layer_names(
            [(layer["type"], layer["name"] if k else None) for layer, k in zip(layers, keep)]
        )
        changed = False
        for i, layer in enumerate(layers):
            if not keep[i] and assigned[i] != layer["name"]:
                keep[i] = changed = True
        if not changed:
            break
    for i, layer in enumerate(layers):
        if not keep[i]:
            del layer["name"]
