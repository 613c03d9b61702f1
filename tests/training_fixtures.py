"""Tiny specs and corpora for training tests: seconds per run on 2 CPU cores."""

from __future__ import annotations

import pathlib
import random

import compiler

CORPUS_ROWS = [
    ("red", "apple"),
    ("green", "pear"),
    ("yellow", "banana"),
    ("purple", "plum"),
    ("orange", "orange"),
]


def write_corpus(path: pathlib.Path, records: int = 240, seed: int = 0) -> pathlib.Path:
    """Short CSV-like records with structure a tiny model learns in a few dozen steps."""
    rng = random.Random(seed)
    lines = []
    for _ in range(records):
        colour, fruit = rng.choice(CORPUS_ROWS)
        lines.append(f"{fruit},{colour},{rng.randint(1, 9)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def spec_text(
    *,
    dp: bool = False,
    epochs: int = 2,
    validation_split: float = 0.1,
    dropout: float = 0.1,
    vocab: int = 40,
    batch: int = 8,
    length: int = 12,
    noise: float = 0.0,
    learning_rate: float = 0.01,
    implementation: str = "standard",
    extra: str = "",
) -> str:
    template = "lstm-text-dp" if dp else "lstm-text"
    privacy = (
        f", l2_norm_clip: 1.0, noise_multiplier: {noise}, num_microbatches: {batch}, "
        f"implementation: {implementation}"
        if dp
        else ""
    )
    return (
        "apiVersion: keraspec/v1\n"
        "name: tiny\n"
        "model:\n"
        f"  template: {template}\n"
        f"  params: {{vocab_size: {vocab}, embedding_dim: 8, rnn_units: 16, "
        f"batch_size: {batch}, sequence_length: {length}, learning_rate: {learning_rate}, "
        f"dropout_rate: {dropout}{privacy}}}\n"
        "training:\n"
        f"  epochs: {epochs}\n"
        f"  validation_split: {validation_split}\n"
        "  seed: 3\n" + extra
    )


def write_spec(path: pathlib.Path, **kwargs) -> pathlib.Path:
    path.write_text(spec_text(**kwargs), encoding="utf-8")
    return path


def load(path: pathlib.Path) -> compiler.Spec:
    return compiler.load_spec(path)


def transformer_spec_text(
    *,
    dp: bool = False,
    epochs: int = 2,
    dropout: float = 0.1,
    length: int = 16,
    noise: float = 0.5,
    learning_rate: float = 0.01,
    extra: str = "",
) -> str:
    """The transformer-text(-dp) template at a few thousand parameters: one block, two heads."""
    template = "transformer-text-dp" if dp else "transformer-text"
    privacy = f", l2_norm_clip: 1.0, noise_multiplier: {noise}, implementation: fast" if dp else ""
    return (
        "apiVersion: keraspec/v1\n"
        "name: tiny-transformer\n"
        "model:\n"
        f"  template: {template}\n"
        "  params: {vocab_size: 40, embedding_dim: 16, num_heads: 2, num_layers: 1, "
        f"mlp_units: 24, batch_size: 8, sequence_length: {length}, "
        f"learning_rate: {learning_rate}, dropout_rate: {dropout}{privacy}}}\n"
        "training:\n"
        f"  epochs: {epochs}\n"
        "  validation_split: 0.1\n"
        "  seed: 3\n" + extra
    )
