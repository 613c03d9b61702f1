"""Templates: named, parameterised specs that expand into the explicit form.

One explicit table, `TEMPLATES`, maps each name to its params model and expansion.
An expansion returns the raw sections (input, model, training) a spec would have written
by hand; the parser merges what the user wrote over them and validates the result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from compiler.lang.spec import (
    DpParams,
    LstmTextDpParams,
    LstmTextParams,
    StrictModel,
    TransformerTextDpParams,
    TransformerTextParams,
)


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    description: str
    params: type[StrictModel]
    expand: Callable[[Any], dict[str, Any]]
    origins: Callable[[dict[str, Any]], dict[tuple[Any, ...], str]]
    """Which param produced each generated field of an expansion (given the expansion),
    so diagnostics can point at it."""


def _lstm_text(p: LstmTextParams) -> dict[str, Any]:
    """Embedding, Dropout, stateful LSTM, Dropout, stateful LSTM, Dropout, Dense logits."""

    def lstm() -> dict[str, Any]:
        return {
            "type": "lstm",
            "units": p.rnn_units,
            "return_sequences": True,
            "stateful": p.stateful,
            "recurrent_initializer": p.rnn_initializer,
        }

    def dropout() -> dict[str, Any]:
        return {"type": "dropout", "rate": p.dropout_rate}

    return {
        "input": {"vocab_size": p.vocab_size, "batch_size": p.batch_size},
        "model": {
            "layers": [
                {"type": "embedding", "output_dim": p.embedding_dim},
                dropout(),
                lstm(),
                dropout(),
                lstm(),
                dropout(),
                {"type": "dense", "units": p.vocab_size},
            ]
        },
        "training": _training(p, "rmsprop"),
    }


def _training(p: Any, optimizer: str) -> dict[str, Any]:
    """The text templates' training block: batches, windows, next-token cross-entropy on
    logits, accuracy, and `optimizer` at the params' learning rate."""
    return {
        "batch_size": p.batch_size,
        "sequence_length": p.sequence_length,
        "loss": {"type": "sparse_categorical_crossentropy", "from_logits": True},
        "metrics": ["accuracy"],
        "optimizer": {"type": optimizer, "learning_rate": p.learning_rate},
    }


DP_PARAMS = ("l2_norm_clip", "noise_multiplier", "num_microbatches", "implementation")


def _with_dp(expanded: dict[str, Any], p: DpParams) -> dict[str, Any]:
    expanded["training"]["privacy"] = {name: getattr(p, name) for name in DP_PARAMS}
    return expanded


def _lstm_text_dp(p: LstmTextDpParams) -> dict[str, Any]:
    return _with_dp(_lstm_text(p), p)


def _transformer_layers(p: TransformerTextParams) -> list[dict[str, Any]]:
    """Token and position embeddings, `num_layers` pre-norm blocks, a final norm, logits.

    Each block: x + dropout(attention(norm(x))), then x + dropout(mlp(norm(x))), where the
    attention is causal and the MLP is dense(mlp_units, gelu) then dense(embedding_dim).
    """
    rate = p.dropout_rate
    layers: list[dict[str, Any]] = [
        {"type": "embedding", "name": "token_embedding", "output_dim": p.embedding_dim},
        {
            "type": "position_embedding",
            "name": "position_embedding",
            "sequence_length": p.sequence_length,
        },
        {"type": "dropout", "name": "embedding_dropout", "rate": rate},
    ]
    x = "embedding_dropout"
    for i in range(1, p.num_layers + 1):
        b = f"block_{i}"
        layers += [
            {"type": "layer_normalization", "name": f"{b}_attention_norm", "inputs": [x]},
            {
                "type": "multi_head_attention",
                "name": f"{b}_attention",
                "num_heads": p.num_heads,
                "dropout": rate,
                "causal": True,
            },
            {"type": "dropout", "name": f"{b}_attention_dropout", "rate": rate},
            {
                "type": "add",
                "name": f"{b}_attention_residual",
                "inputs": [x, f"{b}_attention_dropout"],
            },
            {"type": "layer_normalization", "name": f"{b}_mlp_norm"},
            {
                "type": "dense",
                "name": f"{b}_mlp_hidden",
                "units": p.mlp_units,
                "activation": "gelu",
            },
            {"type": "dense", "name": f"{b}_mlp_output", "units": p.embedding_dim},
            {"type": "dropout", "name": f"{b}_mlp_dropout", "rate": rate},
            {
                "type": "add",
                "name": f"{b}_mlp_residual",
                "inputs": [f"{b}_attention_residual", f"{b}_mlp_dropout"],
            },
        ]
        x = f"{b}_mlp_residual"
    layers += [
        {"type": "layer_normalization", "name": "final_norm", "inputs": [x]},
        {"type": "dense", "name": "logits", "units": p.vocab_size},
    ]
    return layers


def _transformer_text(p: TransformerTextParams) -> dict[str, Any]:
    """A decoder-only transformer (see `_transformer_layers`); Adam."""
    return {
        "input": {"vocab_size": p.vocab_size},
        "model": {"layers": _transformer_layers(p), "output": "logits"},
        "training": _training(p, "adam"),
    }


def _transformer_text_dp(p: TransformerTextDpParams) -> dict[str, Any]:
    return _with_dp(_transformer_text(p), p)


_LSTM_TEXT_ORIGINS: dict[tuple[Any, ...], str] = {
    ("input", "vocab_size"): "vocab_size",
    ("input", "batch_size"): "batch_size",
    ("model", "layers", 0, "output_dim"): "embedding_dim",
    **{("model", "layers", i, "rate"): "dropout_rate" for i in (1, 3, 5)},
    **{("model", "layers", i, "units"): "rnn_units" for i in (2, 4)},
    **{("model", "layers", i, "recurrent_initializer"): "rnn_initializer" for i in (2, 4)},
    **{("model", "layers", i, "stateful"): "stateful" for i in (2, 4)},
    ("model", "layers", 6, "units"): "vocab_size",
    ("training", "batch_size"): "batch_size",
    ("training", "sequence_length"): "sequence_length",
    ("training", "optimizer", "learning_rate"): "learning_rate",
}
_DP_ORIGINS = {("training", "privacy", p): p for p in DP_PARAMS}
_LSTM_TEXT_DP_ORIGINS = {**_LSTM_TEXT_ORIGINS, **_DP_ORIGINS}


def _transformer_origins(expanded: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    """Which param produced each generated field (the layers' indexes follow num_layers)."""
    origins: dict[tuple[Any, ...], str] = {
        ("input", "vocab_size"): "vocab_size",
        ("training", "batch_size"): "batch_size",
        ("training", "sequence_length"): "sequence_length",
        ("training", "optimizer", "learning_rate"): "learning_rate",
    }
    by_field = {
        "output_dim": "embedding_dim",
        "sequence_length": "sequence_length",
        "rate": "dropout_rate",
        "dropout": "dropout_rate",
        "num_heads": "num_heads",
    }
    for i, layer in enumerate(expanded["model"]["layers"]):
        for field, param in by_field.items():
            if field in layer:
                origins[("model", "layers", i, field)] = param
        if "units" in layer:
            name = layer["name"]
            origins[("model", "layers", i, "units")] = (
                "vocab_size"
                if name == "logits"
                else "mlp_units" if name.endswith("_hidden") else "embedding_dim"
            )
    return origins


def _transformer_dp_origins(expanded: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    return {**_transformer_origins(expanded), **_DP_ORIGINS}


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "lstm-text",
            "Two stateful LSTMs between dropouts over an embedding, dense logits; RMSprop "
            "(the gretel-synthetics reference model).",
            LstmTextParams,
            _lstm_text,
            lambda expanded: _LSTM_TEXT_ORIGINS,
        ),
        Template(
            "lstm-text-dp",
            "lstm-text trained with DP-SGD: each example's gradient clipped (keraspec's fast "
            "implementation), Gaussian noise, RMSprop. num_microbatches: 1 with "
            "implementation: standard is the reference's tensorflow-privacy optimizer.",
            LstmTextDpParams,
            _lstm_text_dp,
            lambda expanded: _LSTM_TEXT_DP_ORIGINS,
        ),
        Template(
            "transformer-text",
            "A decoder-only transformer: token and position embeddings, num_layers pre-norm "
            "blocks (causal multi-head attention, then a gelu MLP, each with dropout and a "
            "residual), a final layer normalisation, dense logits; Adam.",
            TransformerTextParams,
            _transformer_text,
            _transformer_origins,
        ),
        Template(
            "transformer-text-dp",
            "transformer-text trained with DP-SGD: each example's gradient clipped "
            "(keraspec's fast implementation by default), Gaussian noise, Adam.",
            TransformerTextDpParams,
            _transformer_text_dp,
            _transformer_dp_origins,
        ),
    )
}


def merge(base: Any, override: Any) -> Any:
    """Deep-merge `override` over `base`; mappings with a different `type` are replaced."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    if "type" in override and base.get("type") != override["type"]:
        return override
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if key in base else value
    return out
