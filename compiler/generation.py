"""Generating records: from an export's in-graph `generate` signature, or from a run.

- From an export (BASE/NAME or BASE/NAME/VERSION), `generate` is a local client of the
  SavedModel's `generate` signature: the whole sampling loop runs in the graph.
- From a run directory, it is a plain Keras sampling loop, the reference generator's: the
  spec's model is rebuilt with a batch of `count` rows and every recurrent layer stateful,
  the run's weights are loaded, the prompt (after `<eor>`, the state "a record begins
  here") is fed once, then one sampled token at a time until every row has emitted `<eor>`
  or `max_new_tokens` tokens.

For a delimited corpus (CSV and the like), each record is checked against the training
records' field count, as the reference generator's validators do.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

import numpy as np

from compiler.data.corpus import fits_shape
from compiler.diagnostics import Diagnostic, RunError
from compiler.rundir import BEST, SPEC_FILE, RunDir
from compiler.data.tokenizer import EOR_ID, PAD_ID, Tokenizer, encode_prompt, load_tokenizer
from compiler.weights import load_weights, reshaped_spec


@dataclasses.dataclass(frozen=True)
class Generated:
    """Records sampled from a run or an export.

    Attributes:
        records: The texts, prompt included.
        complete: Per record, whether the model ended it (emitted `<eor>`) before
            `max_new_tokens` ran out.
        valid: Per record, whether it has the training records' field count (None when the
            corpus was not delimited).
        source: The run directory or export version directory sampled from.
        step: The training step of the weights, when known.
    """

    records: list[str]
    complete: list[bool]
    valid: Optional[list[bool]]
    source: str
    step: Optional[int]

    @property
    def valid_share(self) -> Optional[float]:
        return None if self.valid is None else sum(self.valid) / len(self.valid)


def load_run_model(
    run_dir: str, rows: Optional[int], which: str = BEST, *, stateful: bool = True
) -> tuple[Any, Any, Tokenizer, int]:
    """The run's spec, its model, tokenizer and checkpoint step.

    Args:
        run_dir: A run directory written by `train`.
        rows: The model's batch size (None: any, for a stateless model).
        which: "best" or "latest" checkpoint.
        stateful: Build the recurrent layers stateful (sampling one token at a time) or
            stateless (scoring whole sequences).

    Raises:
        RunError: the directory holds no trained run, or its checkpoint does not load.
    """
    from compiler.build import compile_spec
    from compiler.lang.parse import load_spec

    run = RunDir(run_dir)
    pointer = run.trained_checkpoint(which)
    spec = load_spec(run.file(SPEC_FILE))
    tokenizer = load_tokenizer(run_dir)
    model = compile_spec(reshaped_spec(spec, batch_size=rows, stateful=stateful)).model
    load_weights(model, pointer["prefix"])
    return spec, model, tokenizer, int(pointer["step"])


def generate(
    path: Union[str, os.PathLike[str]],
    *,
    count: int = 5,
    prompt: str = "",
    max_new_tokens: Optional[int] = None,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    checkpoint: str = BEST,
) -> Generated:
    """Sample `count` records from an export or a trained run.

    Args:
        path: An export (BASE/NAME, whose highest version is used, or BASE/NAME/VERSION),
            or a run directory written by `train`.
        count: Records to sample (sampled together, as one batch).
        prompt: Text every record starts with; its characters must be in the vocabulary.
        max_new_tokens: Tokens to sample at most per record (default: twice the training
            sequence length).
        temperature: Divides the logits; lower is more conservative; 0 is greedy.
        seed: Seed of the sampler; the same seed gives the same records (default: random).
        checkpoint: For a run directory, "best" or "latest".

    Raises:
        RunError: `path` is neither an export nor a trained run.
        DataError: the prompt has a character the tokenizer has never seen.
        RunError: the request exceeds the export's limits (export.limits).
        ValueError: count < 1, max_new_tokens < 1, or a temperature that is negative or
            not finite.
    """
    from compiler.export import resolve_export

    if (count < 1 or (max_new_tokens is not None and max_new_tokens < 1)
            or not 0 <= temperature < float("inf")):
        raise ValueError("expected count >= 1, max_new_tokens >= 1 and a finite "
                         "temperature >= 0")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    version_dir = resolve_export(path)
    if version_dir is not None:
        return _from_export(version_dir, count, prompt, max_new_tokens, temperature, seed)
    if not RunDir(os.fspath(path)).exists():
        raise RunError(
            [
                Diagnostic(
                    "error",
                    "not_generatable",
                    "expected an export (BASE/NAME or BASE/NAME/VERSION with saved_model.pb) "
                    "or a run directory written by keraspec train, received "
                    + _what_is_there(os.fspath(path)),
                    "",
                    os.fspath(path),
                )
            ]
        )
    return _from_run(os.fspath(path), count, prompt, max_new_tokens, temperature, seed, checkpoint)


def _what_is_there(path: str) -> str:
    """What a path that is neither an export nor a run is, with a hint when one is near."""
    if not os.path.exists(path):
        return "a path that does not exist"
    if not os.path.isdir(path):
        return "a file"
    from compiler.export import MODELS_CONFIG, resolve_export

    names = sorted(n for n in os.listdir(path)
                   if resolve_export(os.path.join(path, n)) is not None)
    if names:
        hint = ", ".join(os.path.join(path, n) for n in names[:5])
        where = f" ({MODELS_CONFIG} lists them)" if os.path.exists(
            os.path.join(path, MODELS_CONFIG)) else ""
        return f"a base directory of exports: name one of them, e.g. {hint}{where}"
    return "a directory holding neither"


def _check(records: list[str], shape: Optional[dict[str, Any]]) -> Optional[list[bool]]:
    return None if not shape else [fits_shape(r, shape) for r in records]


def _from_export(version_dir, count, prompt, max_new_tokens, temperature, seed) -> Generated:
    from compiler.export import read_metadata
    from compiler.lang.parse import load_spec
    from compiler.tf import tensorflow

    tf = tensorflow()
    metadata = read_metadata(version_dir)
    tokenizer = load_tokenizer(os.path.join(version_dir, "assets"))
    if max_new_tokens is None:
        spec_path = os.path.join(version_dir, "assets.extra", "keraspec", SPEC_FILE)
        max_new_tokens = 2 * load_spec(spec_path).training.sequence_length
    loaded = tf.saved_model.load(version_dir)
    if "generate" not in loaded.signatures:
        raise RunError(
            [Diagnostic("error", "no_generate_signature", "expected an export with a generate "
                        f"signature, received one with {sorted(loaded.signatures)}", "",
                        version_dir)]
        )
    ids = encode_prompt(tokenizer, prompt)
    _check_limits(version_dir, count, len(ids), max_new_tokens)
    prompts = np.tile(ids.astype(np.int32), (count, 1))
    # One value per row (the signature is batchable); each row its own seed, derived from
    # the request's, so that the rows differ.
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts.reshape(count, len(ids))),
        max_new_tokens=tf.fill([count], tf.constant(max_new_tokens, tf.int32)),
        temperature=tf.fill([count], tf.constant(temperature, tf.float32)),
        seed=tf.constant(np.arange(count, dtype=np.int64) + np.int64(seed) * 1_000_003),
    )
    tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
    records = [prompt + tokenizer.decode(tokens[i, : lengths[i]]) for i in range(count)]
    return Generated(
        records,
        [bool(c) for c in out["complete"].numpy()],
        _check(records, metadata.get("record_shape")),
        version_dir,
        metadata.get("step"),
    )


def _check_limits(version_dir: str, count: int, prompt_tokens: int, max_new: int) -> None:
    """The export's request limits, checked before a request is sent, as located errors."""
    from compiler.lang.parse import load_spec

    spec_path = os.path.join(version_dir, "assets.extra", "keraspec", SPEC_FILE)
    if not os.path.exists(spec_path):
        return
    limits = load_spec(spec_path).export.limits
    problems = [
        ("--count", count, limits.max_batch, "max_batch"),
        ("--max-new-tokens", max_new, limits.max_new_tokens, "max_new_tokens"),
        ("--prompt", prompt_tokens, limits.max_prompt_length, "max_prompt_length"),
    ]
    found = [
        Diagnostic("error", "export_limit",
                   f"expected at most export.limits.{field} = {limit} (the export's request "
                   f"limit), received {value}", flag, version_dir)
        for flag, value, limit, field in problems if value > limit
    ]
    if found:
        raise RunError(found)


def _from_run(run_dir, count, prompt, max_new_tokens, temperature, seed, checkpoint) -> Generated:
    from compiler.tf import tensorflow

    tf = tensorflow()
    spec, model, tokenizer, step = load_run_model(run_dir, count, checkpoint)
    if max_new_tokens is None:
        max_new_tokens = 2 * spec.training.sequence_length
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
    shape = RunDir(run_dir).read_run().get("record_shape")
    return Generated(records, [bool(d) for d in done], _check(records, shape), run_dir, step)


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
