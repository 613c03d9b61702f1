"""A Keras model's config to a spec: the graph, each layer through the registry, the compile
config, and the defaults left out so that the spec reads like one written by hand.

Each layer is read by the layer type whose `keras_class` its class is (`LayerBase.
from_keras`): the registry is the only list. Sequential and functional graphs of both
tf-keras and Keras 3 are read; a layer called more than once (shared weights), a model
with several inputs or outputs, or a call with keyword arguments is refused.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn, Optional

from compiler.importing.formats import KerasFile, refusal
from compiler.lang.source import Path, format_path

API_VERSION = "keraspec/v1"
OPTIMIZER_FIXED: dict[str, tuple[Any, ...]] = {
    "name": (),  # any
    "decay": (0, 0.0),
    "weight_decay": (None, 0, 0.0),
    "clipnorm": (None,),
    "global_clipnorm": (None,),
    "clipvalue": (None,),
    "use_ema": (False,),
    "ema_momentum": (),
    "ema_overwrite_frequency": (),  # only read with use_ema
    "jit_compile": (),
    "is_legacy_optimizer": (),
    "loss_scale_factor": (None,),
    "gradient_accumulation_steps": (None,),
}
LOSS_FIXED: dict[str, tuple[Any, ...]] = {
    "name": (),
    "reduction": ("auto", "sum_over_batch_size"),
    "ignore_class": (None,),
    "axis": (-1,),
    "fn": ("sparse_categorical_crossentropy",),
    "dtype": (None, "float32"),
}


class Reader:
    """Reads one Keras file's config; every refusal names the file and the field path."""

    def __init__(self, source: KerasFile) -> None:
        self.source = source
        root: Path = {"h5": ("model_config",), "keras": ("config.json",)}.get(source.format, ())
        self.root = root

    def refuse(self, path: Path, message: str, code: str = "import_unsupported") -> NoReturn:
        raise self._located(path, message, code)

    def _located(self, path: Path, message: str, code: str) -> Exception:
        if self.source.format == "json":
            # Lines are found only for an error: a large config parses fast without them.
            from compiler.diagnostics import SpecError
            from compiler.lang.source import load_text

            try:
                with open(self.source.path, "rb") as f:
                    located = load_text(f.read(), self.source.path, max_bytes=1 << 26)
                return SpecError([located.diagnostic(path, code, message, key=True)])
            except Exception:  # noqa: BLE001 - the message matters more than the line
                pass
        return refusal(self.source.path, format_path(self.root + path), message, code)


# ------------------------------------------------------------------------------ the graph


def _class(entry: dict[str, Any]) -> str:
    return str(entry.get("class_name", "")).split(">")[-1]


def _batch_shape(config: dict[str, Any]) -> Optional[list[Any]]:
    for key in ("batch_input_shape", "batch_shape"):
        if config.get(key) is not None:
            return list(config[key])
    return None


def _history(value: Any) -> list[tuple[str, int, int]]:
    """The (layer, node, tensor) references a call's inputs hold, in both formats."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            layer, node, tensor = value["config"]["keras_history"]
            return [(layer, node, tensor)]
        return []
    if isinstance(value, list):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
            return [(value[0], value[1], value[2])]
        out = []
        for item in value:
            out.extend(_history(item))
        return out
    return []


def _call_inputs(reader: Reader, entry: dict[str, Any], path: Path) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        reader.refuse(
            path + ("inbound_nodes",),
            f"expected layer {entry.get('name')!r} called once, received {len(nodes)} calls "
            "(a layer shared between calls is not in the spec language)",
        )
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        # Keras 3 records a recurrent call's defaults: training and no mask.
        kwargs = {
            k: v
            for k, v in (node.get("kwargs") or {}).items()
            if not (k in ("training", "mask") and v in (None, False))
        }
        if kwargs:
            reader.refuse(
                path + ("inbound_nodes", 0, "kwargs"),
                f"expected a call without keyword arguments, received {sorted(kwargs)}",
            )
        refs = _history(node.get("args", []))
    else:  # tf-keras: [[layer, node, tensor, kwargs], ...]
        for i, ref in enumerate(node):
            if len(ref) > 3 and ref[3]:
                reader.refuse(
                    path + ("inbound_nodes", 0, i),
                    f"expected a call without keyword arguments, received {sorted(ref[3])}",
                )
        refs = _history(node)
    for layer, node_index, tensor in refs:
        if node_index != 0 or tensor != 0:
            reader.refuse(
                path + ("inbound_nodes",),
                f"expected the first output of each input layer, received {layer!r} call "
                f"{node_index} output {tensor}",
            )
    return [layer for layer, _, _ in refs]


def read_graph(reader: Reader) -> dict[str, Any]:
    """The spec's `input` and `model` sections, with every field the file sets."""
    from compiler.layers import LAYER_TYPES

    by_class = {t.keras_class: (name, t) for name, t in LAYER_TYPES.items()}
    model = reader.source.model
    kind = _class(model)
    config = model.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        reader.refuse(("config",), f"expected a Sequential or functional model, received {kind}")
    entries = config["layers"]
    functional = kind not in ("Sequential",)
    if kind not in ("Sequential", "Functional", "Model") and not any(
        "inbound_nodes" in e for e in entries
    ):
        reader.refuse(("class_name",), f"expected Sequential or Functional, received {kind}")
    layers: list[dict[str, Any]] = []
    batch_shape: Optional[list[Any]] = None
    input_name = "tokens"
    previous: Optional[str] = None
    for i, entry in enumerate(entries):
        path: Path = ("config", "layers", i)
        cls = _class(entry)
        layer_config = entry.get("config") or {}
        name = layer_config.get("name", entry.get("name"))
        if cls == "InputLayer":
            if functional and batch_shape is not None:
                reader.refuse(path, "expected one model input, received several")
            batch_shape = _batch_shape(layer_config)
            input_name = name if functional else input_name
            previous = input_name
            continue
        if cls not in by_class:
            known = ", ".join(sorted(by_class))
            reader.refuse(
                path + ("class_name",),
                f"layer {name!r}: expected a Keras class the spec language has ({known}), "
                f"received {cls}"
                + (
                    " (a Lambda runs code a spec cannot hold; write its computation as " "layers)"
                    if cls == "Lambda"
                    else ""
                ),
            )
        spec_type, layer_type = by_class[cls]
        if not functional and batch_shape is None:
            batch_shape = _batch_shape(layer_config)
        fields = layer_type.from_keras(
            layer_config,
            lambda key, message, p=path, n=name, c=cls: reader.refuse(
                p + ("config", key), f"layer {n!r} ({c}): {message}"
            ),
        )
        layer = {"type": spec_type, "name": name, **fields}
        if functional:
            inputs = _call_inputs(reader, entry, path)
            if inputs != [previous]:
                layer["inputs"] = inputs
        layers.append(layer)
        previous = layer["name"]
    if not layers:
        reader.refuse(("config", "layers"), "expected at least one layer, received none")
    output = None
    if functional:
        outputs = _history(config.get("output_layers"))
        if len(outputs) != 1:
            reader.refuse(
                ("config", "output_layers"),
                f"expected one model output, received {len(outputs)}",
            )
        if outputs[0][0] != layers[-1]["name"]:
            output = outputs[0][0]
    vocab = _vocabulary(reader, layers)
    section: dict[str, Any] = {"name": input_name, "vocab_size": vocab}
    if batch_shape:
        if batch_shape[0] is not None:
            section["batch_size"] = int(batch_shape[0])
        if len(batch_shape) > 1 and batch_shape[1] is not None:
            section["sequence_length"] = int(batch_shape[1])
    graph: dict[str, Any] = {"layers": layers}
    if output is not None:
        graph["output"] = output
    return {"input": section, "model": graph}


def _vocabulary(reader: Reader, layers: list[dict[str, Any]]) -> int:
    embeddings = [layer for layer in layers if layer["type"] == "embedding"]
    if not embeddings or "input_dim" not in embeddings[0]:
        reader.refuse(
            ("config", "layers"),
            "expected an embedding layer reading the token ids (its input_dim is the "
            "vocabulary), received a model without one",
        )
    vocab = int(embeddings[0]["input_dim"])
    for layer in embeddings:
        if layer.get("input_dim") == vocab:
            del layer["input_dim"]
    return vocab


# ------------------------------------------------------------------------------ training


def _float32(value: Any) -> Any:
    """A float as written before Keras stored it in float32 (0.01, not 0.0099999998)."""
    if isinstance(value, float) and math.isfinite(value):
        import numpy as np

        return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))
    return value


def read_training(reader: Reader) -> dict[str, Any]:
    """The spec's optimizer, loss and metrics from the compile config (empty without one)."""
    compiled = reader.source.compile
    if not compiled:
        return {}
    root: Path = ("compile_config",)
    out: dict[str, Any] = {}
    optimizer = compiled.get("optimizer")
    if isinstance(optimizer, dict):
        out["optimizer"] = _optimizer(reader, optimizer, root + ("optimizer",))
    loss = compiled.get("loss")
    if loss is not None:
        out["loss"] = _loss(reader, loss, root + ("loss",))
    metrics = _metric_names(compiled.get("metrics"))
    if metrics is not None:
        out["metrics"] = metrics
    return out


def _optimizer(reader: Reader, value: dict[str, Any], path: Path) -> dict[str, Any]:
    from compiler.lang.spec import OPTIMIZER_MODELS

    kinds = {model.keras_class: kind for kind, model in OPTIMIZER_MODELS.items()}
    cls = _class(value)
    if cls not in kinds:
        reader.refuse(
            path + ("class_name",),
            f"expected one of the spec's optimizers ({', '.join(kinds)}), received {cls}",
        )
    kind = kinds[cls]
    model = OPTIMIZER_MODELS[kind]
    out: dict[str, Any] = {"type": kind}
    for key, setting in (value.get("config") or {}).items():
        if key in model.model_fields and key != "type":
            if isinstance(setting, dict):
                reader.refuse(
                    path + ("config", key),
                    f"expected a constant {key}, received {setting.get('class_name')} (a "
                    "schedule is not in the spec language)",
                )
            out[key] = _float32(setting)
        elif key in OPTIMIZER_FIXED:
            _check_fixed(reader, path + ("config", key), key, setting, OPTIMIZER_FIXED[key])
        else:
            reader.refuse(
                path + ("config", key),
                f"expected the settings the spec has for {cls} "
                f"({', '.join(k for k in model.model_fields if k != 'type')}), received {key}",
            )
    return out


def _check_fixed(reader: Reader, path: Path, key: str, setting: Any, allowed: tuple) -> None:
    """A setting the spec does not write must hold one of `allowed` (any, when empty)."""
    if allowed and setting not in allowed:
        reader.refuse(
            path, f"expected {key} {' or '.join(map(repr, allowed))}, received {setting!r}"
        )


def _loss(reader: Reader, value: Any, path: Path) -> dict[str, Any]:
    if value == "sparse_categorical_crossentropy":
        return {"type": "sparse_categorical_crossentropy", "from_logits": False}
    if not isinstance(value, dict) or _class(value) != "SparseCategoricalCrossentropy":
        reader.refuse(
            path,
            "expected sparse_categorical_crossentropy (next-token loss), received "
            f"{value.get('class_name') if isinstance(value, dict) else value!r}",
        )
    out = {"type": "sparse_categorical_crossentropy", "from_logits": False}
    for key, setting in (value.get("config") or {}).items():
        if key == "from_logits":
            out["from_logits"] = bool(setting)
        elif key in LOSS_FIXED:
            _check_fixed(reader, path + ("config", key), key, setting, LOSS_FIXED[key])
        else:
            reader.refuse(path + ("config", key), f"expected no {key}, received {setting!r}")
    return out


def _metric_names(value: Any) -> Optional[list[str]]:
    if value is None:
        return None
    names: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and "class_name" in item:
            from compiler.layers.keras_config import snake

            # A metric given by name is wrapped (MeanMetricWrapper) under that name.
            named = (item.get("config") or {}).get("name")
            names.append(named if _class(item) == "MeanMetricWrapper" else snake(_class(item)))
        elif isinstance(item, list):
            for sub in item:
                walk(sub)

    walk(value)
    return [n for n in names if n != "loss"]
