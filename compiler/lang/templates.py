"""Templates: named, parameterised specs that expand into the explicit form.

One explicit table, `TEMPLATES`, maps each name to its params model and expansion.
An expansion returns the raw sections (input, model, training) a spec would have written
by hand; the parser merges what the user wrote over them and validates the result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from compiler.lang.spec import LstmTextDpParams, LstmTextParams, StrictModel


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    description: str
    params: type[StrictModel]
    expand: Callable[[Any], dict[str, Any]]
    origins: dict[tuple[Any, ...], str] = dataclasses.field(default_factory=dict)
    """Which param produced each generated field, so diagnostics can point at it."""


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
        "training": {
            "batch_size": p.batch_size,
            "sequence_length": p.sequence_length,
            "loss": {"type": "sparse_categorical_crossentropy", "from_logits": True},
            "metrics": ["accuracy"],
            "optimizer": {"type": "rmsprop", "learning_rate": p.learning_rate},
        },
    }


def _lstm_text_dp(p: LstmTextDpParams) -> dict[str, Any]:
    expanded = _lstm_text(p)
    expanded["training"]["privacy"] = {
        "l2_norm_clip": p.l2_norm_clip,
        "noise_multiplier": p.noise_multiplier,
        "num_microbatches": p.num_microbatches,
        "implementation": p.implementation,
    }
    return expanded


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
_LSTM_TEXT_DP_ORIGINS = {
    **_LSTM_TEXT_ORIGINS,
    **{
        ("training", "privacy", p): p
        for p in ("l2_norm_clip", "noise_multiplier", "num_microbatches", "implementation")
    },
}

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "lstm-text",
            "Two stateful LSTMs between dropouts over an embedding, dense logits; RMSprop "
            "(the gretel-synthetics reference model).",
            LstmTextParams,
            _lstm_text,
            _LSTM_TEXT_ORIGINS,
        ),
        Template(
            "lstm-text-dp",
            "lstm-text trained with DP-SGD: each example's gradient clipped (keraspec's fast "
            "implementation), Gaussian noise, RMSprop. num_microbatches: 1 with "
            "implementation: standard is the reference's tensorflow-privacy optimizer.",
            LstmTextDpParams,
            _lstm_text_dp,
            _LSTM_TEXT_DP_ORIGINS,
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
