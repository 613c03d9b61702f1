"""A Keras layer's config read back into spec fields: what `LayerBase.from_keras` does.

Spec fields are named after the Keras class's arguments, so most of a layer's config is its
spec fields. The rest must be what the spec's layer builds: the arguments every layer
shares (trainable, float32, no regularizer, no constraint) and each type's `keras_fixed`.
Initializers are read from their serialised form (tf-keras and Keras 3 alike) into the
spec's names, and only with their default arguments: a seeded or rescaled initializer is
not in the spec language. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import re
from typing import Any, get_args

# Keras' class of each of the spec's initializer names, and that class's default arguments.
INITIALIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "glorot_uniform": ("GlorotUniform", {}),
    "glorot_normal": ("GlorotNormal", {}),
    "he_uniform": ("HeUniform", {}),
    "he_normal": ("HeNormal", {}),
    "lecun_uniform": ("LecunUniform", {}),
    "lecun_normal": ("LecunNormal", {}),
    "orthogonal": ("Orthogonal", {"gain": 1.0}),
    "identity": ("Identity", {"gain": 1.0}),
    "zeros": ("Zeros", {}),
    "ones": ("Ones", {}),
    "uniform": ("RandomUniform", {"minval": -0.05, "maxval": 0.05}),
    "random_uniform": ("RandomUniform", {"minval": -0.05, "maxval": 0.05}),
    "random_normal": ("RandomNormal", {"mean": 0.0, "stddev": 0.05}),
    "truncated_normal": ("TruncatedNormal", {"mean": 0.0, "stddev": 0.05}),
    "variance_scaling": (
        "VarianceScaling",
        {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"},
    ),
}

# Arguments every layer has, with the values a spec's layer gives them.
SHARED_FIXED: dict[str, tuple[Any, ...]] = {
    "trainable": (True,),
    "activity_regularizer": (None,),
    "quantization_config": (None,),
    "lora_rank": (None,),
    "lora_alpha": (None,),
}
# Read by the graph, not by the layer.
GRAPH_KEYS = ("name", "batch_input_shape", "batch_shape", "input_shape", "input_dim_shape")


def snake(name: str) -> str:
    """CamelCase -> snake_case as Keras does it (LayerNormalization -> layer_normalization,
    LSTM -> lstm, Conv1D -> conv1d)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _dtype(value: Any) -> Any:
    """tf-keras' "float32", or Keras 3's DTypePolicy, as its name."""
    if isinstance(value, dict):
        return value.get("config", {}).get("name", value.get("class_name"))
    return value


def read_initializer(value: Any, default: Any) -> Any:
    """The spec's name for a serialised initializer, or None when the spec has none.

    The field's `default` name is preferred where two names build the same initializer
    ("uniform" and "random_uniform"), so a default imports as the default.
    """
    if isinstance(value, str):
        value = {"class_name": "".join(p.title() for p in value.split("_")), "config": {}}
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
        return None
    class_name = value["class_name"].split(">")[-1]
    config = {k: v for k, v in (value.get("config") or {}).items() if v is not None}
    if "seed" in config:
        return None
    names = [default] + [n for n in INITIALIZERS if n != default]
    for name in names:
        keras_class, arguments = INITIALIZERS.get(name, ("", {}))
        if keras_class == class_name and all(
            _same(config.get(k, v), v) for k, v in arguments.items()
        ):
            if set(config) <= set(arguments):
                return name
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-7 * max(1.0, abs(float(b)))
    return bool(a == b)


def _allowed(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal field (through Optional), or ()."""
    for arg in get_args(annotation) or (annotation,):
        values = get_args(arg)
        if values and all(isinstance(v, (str, int, bool)) for v in values):
            return values
    return ()


def spec_fields_from(layer_type: type, config: dict[str, Any], refuse: Any) -> dict[str, Any]:
    """See `LayerBase.from_keras`."""
    fields = {k: f for k, f in layer_type.model_fields.items() if k not in ("type", "inputs")}
    fixed = {**SHARED_FIXED, **layer_type.keras_fixed}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in GRAPH_KEYS:
            continue
        if key == "dtype":
            if _dtype(value) not in ("float32", None):
                refuse(key, f"expected dtype float32, received {_dtype(value)!r}")
            continue
        if key in fields:
            field = fields[key]
            if key.endswith("_initializer"):
                name = read_initializer(value, field.default)
                if name is None:
                    refuse(
                        key,
                        f"expected one of the spec's initializers with Keras' default "
                        f"arguments and no seed ({', '.join(INITIALIZERS)}), received "
                        f"{_short(value)}",
                    )
                out[key] = name
                continue
            if isinstance(value, dict):
                refuse(key, f"expected a plain value, received a serialised object {_short(value)}")
            if isinstance(value, list) and len(value) == 1 and not isinstance(field.default, list):
                value = value[0]  # Conv1D's kernel_size, dilation_rate as 1-tuples
            values = _allowed(field.annotation)
            if values and value not in values:
                refuse(key, f"expected one of {', '.join(map(repr, values))}, received {value!r}")
            out[key] = value
            continue
        if key in fixed:
            if key.endswith("_initializer"):
                value = read_initializer(value, fixed[key][0])
            if not any(_same(value, v) for v in fixed[key]):
                refuse(
                    key,
                    f"expected {key} {' or '.join(map(repr, fixed[key]))} (the spec language "
                    f"does not set it), received {_short(value)}",
                )
            continue
        if key.endswith(("_regularizer", "_constraint")):
            if value is not None:
                refuse(
                    key,
                    f"expected no {key.replace('_', ' ')} (the spec language has none), "
                    f"received {_short(value)}",
                )
            continue
        supported = ", ".join(sorted(fields))
        refuse(
            key,
            f"expected the arguments the spec language supports for {layer_type.keras_class} "
            f"({supported}), received {key} = {_short(value)}",
        )
    return out


def _short(value: Any) -> str:
    if isinstance(value, dict) and "class_name" in value:
        return f"{value['class_name']}({value.get('config') or ''})"[:120]
    return repr(value)[:120]
