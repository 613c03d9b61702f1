"""Generating records from a trained run with a plain Keras sampling loop.

The loop is the reference generator's: the spec's model is rebuilt with a batch of `count`
rows and every recurrent layer stateful, the run's weights are loaded, the prompt (after
`<eor>`, the state "a record begins here") is fed once, then one sampled token at a time
until every row has emitted `<eor>` or `max_new_tokens` tokens.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

import numpy as np

from compiler import spec as s
from compiler.diagnostics import Diagnostic, RunError
from compiler.rundir import BEST, LATEST, SPEC_FILE, RunDir
from compiler.tokenizer import EOR_ID, PAD_ID, Tokenizer, encode_prompt, load_tokenizer


@dataclasses.dataclass(frozen=True)
class Generated:
    """Records sampled from a run.

    Attributes:
        records: The texts, prompt included.
        complete: Per record, whether the model ended it (emitted `<eor>`) before
            `max_new_tokens` ran out.
        step: The training step of the checkpoint sampled from.
    """

    records: list[str]
    complete: list[bool]
    step: int


def sampling_spec(spec: s.Spec, rows: int) -> s.Spec:
    """The spec's model with a batch of `rows`, every recurrent layer stateful, no DP."""
    layers = [
        layer.model_copy(update={"stateful": True}) if isinstance(layer, s.RecurrentLayer)
        else layer
        for layer in spec.model.layers
    ]
    return spec.model_copy(
        update={
            "input": spec.input.model_copy(update={"batch_size": rows, "sequence_length": None}),
            "model": spec.model.model_copy(update={"layers": layers}),
            "training": spec.training.model_copy(
                update={"privacy": None, "batch_size": rows, "sequence_length": None}
            ),
        }
    )


def load_run_model(run_dir: str, rows: int, which: str = BEST) -> tuple[Any, Tokenizer, int]:
    """The run's model for sampling `rows` rows, its tokenizer and the checkpoint's step.

    Raises:
        RunError: the directory holds no trained run, or its checkpoint does not load.
    """
    from compiler.build import compile_spec
    from compiler.parse import load_spec
    from compiler.tf import tensorflow

    run = RunDir(run_dir)
    if not run.exists():
        raise RunError(
            [Diagnostic("error", "not_a_run", "expected a run directory written by keraspec "
                        "train, received one without run.json", "", run_dir)]
        )
    pointer = run.pointer(which) or run.pointer(LATEST)
    if pointer is None:
        raise RunError(
            [Diagnostic("error", "no_checkpoint", "expected a trained run, received one with "
                        "no checkpoint yet; train it first", "", run_dir)]
        )
    spec = load_spec(run.file(SPEC_FILE))
    tokenizer = load_tokenizer(run_dir)
    tf = tensorflow()
    model = compile_spec(sampling_spec(spec, rows)).model
    try:
        tf.train.Checkpoint(model=model).read(pointer["prefix"]).expect_partial()
    except (ValueError, tf.errors.OpError) as e:
        raise RunError(
            [Diagnostic("error", "checkpoint_unreadable", f"expected a checkpoint of the "
                        f"run's spec, received: {str(e).splitlines()[0][:300]}", "",
                        pointer["prefix"])]
        ) from e
    return model, tokenizer, int(pointer["step"])


def generate(
    run_dir: Union[str, os.PathLike[str]],
    *,
    count: int = 5,
    prompt: str = "",
    max_new_tokens: Optional[int] = None,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    checkpoint: str = BEST,
) -> Generated:
    """Sample `count` records from a trained run.

    Args:
        run_dir: A run directory written by `train`.
        count: Records to sample (sampled together, as one batch).
        prompt: Text every record starts with; its characters must be in the vocabulary.
        max_new_tokens: Tokens to sample at most per record (default: twice the training
            sequence length).
        temperature: Divides the logits; lower is more conservative. 0 picks the most
            likely token.
        seed: Seed of the sampler; the same seed gives the same records.
        checkpoint: "best" or "latest".

    Raises:
        RunError: no trained run in `run_dir`.
        DataError: the prompt has a character the tokenizer has never seen.
        ValueError: count < 1, max_new_tokens < 1 or temperature < 0.
    """
    if count < 1 or (max_new_tokens is not None and max_new_tokens < 1) or temperature < 0:
        raise ValueError("expected count >= 1, max_new_tokens >= 1 and temperature >= 0")
    from compiler.tf import tensorflow

    tf = tensorflow()
    run_dir = os.fspath(run_dir)
    model, tokenizer, step = load_run_model(run_dir, count, checkpoint)
    if max_new_tokens is None:
        from compiler.parse import load_spec

        max_new_tokens = 2 * load_spec(os.path.join(run_dir, SPEC_FILE)).training.sequence_length
    prompt_ids = encode_prompt(tokenizer, prompt)
    context = np.tile(np.concatenate(([EOR_ID], prompt_ids)).astype(np.int32), (count, 1))
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    rng = np.random.default_rng(seed)
    # Only ids the tokenizer can produce, never padding: the model's vocab may be larger.
    allowed = np.zeros(model.output_shape[-1], dtype=bool)
    allowed[: tokenizer.size] = True
    allowed[PAD_ID] = False
    out = np.zeros((count, max_new_tokens), dtype=np.int32)
    done = np.zeros(count, dtype=bool)
    lengths = np.full(count, max_new_tokens)
    logits = call(tf.constant(context))[:, -1, :].numpy()
    for t in range(max_new_tokens):
        ids = _sample(logits, allowed, temperature, rng)
        ids[done] = EOR_ID
        out[:, t] = ids
        finished = ~done & (ids == EOR_ID)
        lengths[finished] = t
        done |= finished
        if done.all():
            break
        logits = call(tf.constant(ids[:, None]))[:, -1, :].numpy()
    records = [prompt + tokenizer.decode(out[i, : lengths[i]]) for i in range(count)]
    return Generated(records, [bool(d) for d in done], step)


def _sample(logits: np.ndarray, allowed: np.ndarray, temperature: float, rng: Any) -> np.ndarray:
    logits = np.where(allowed, logits.astype(np.float64), -np.inf)
    if temperature == 0:
        return logits.argmax(axis=1).astype(np.int32)
    z = logits / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    cumulative = p.cumsum(axis=1)
    # u in [0, total): the first index whose cumulative mass reaches u has p > 0.
    u = rng.random((len(p), 1)) * cumulative[:, -1:]
    return (cumulative <= u).sum(axis=1).astype(np.int32)
