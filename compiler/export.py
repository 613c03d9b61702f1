"""Exporting: a trained run to a SavedModel that TF Serving loads and serves correctly.

The training model is stateful with a fixed batch; a naive save of it serves answers that
depend on earlier requests (its LSTM state lives in variables shared by every caller). The
exporter rebuilds the spec's model stateless with a variable batch, taking and returning
each recurrent layer's state as tensors (`compiler.build.build_state_model`), copies the
trained weights into it, and writes signatures whose answers depend only on their inputs:

- `serving_default`: token ids [batch, time] -> logits [batch, time, vocab] and the
  next-token probabilities at the last position;
- `step`: token ids plus every recurrent state -> logits and the new states, for clients
  that keep the state themselves;
- `generate`: prompt ids (right-padded with 0), max_new_tokens, temperature and seed ->
  generated ids, the whole sampling loop in the graph (`tf.while_loop`) after the start
  tokens (`start_tokens`), each row stopping at `<eor>`, deterministic for a given seed;
- `generate_text` (char tokenizer only): prompt strings -> generated strings, with the
  tokenizer in the graph as core string and lookup ops that every TF Serving build has.

Layout: BASE/NAME/VERSION/ (saved_model.pb, variables/, assets/ with the tokenizer,
assets.extra/tf_serving_warmup_requests, assets.extra/keraspec/ with the spec and export
metadata) and BASE/models.config. A version is written beside its final place, verified
(loaded back; logits compared with the Keras model's), fsynced and renamed: TF Serving can
never see a partial version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterator, Optional, Union

import numpy as np

from compiler.batching import write_batching_parameters
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec, checked
from compiler.diagnostics import Diagnostic, ExportError
from compiler.files import (
    digest_mismatch,
    file_sha256,
    fsync_directory,
    fsync_tree,
    resource_errors,
    write_atomic,
)
from compiler.lang.render import dump_yaml, to_data
from compiler.data.dataset import start_tokens, unit_of
from compiler.data.tokenizer import EOR_ID, PAD_ID, CharTokenizer, Tokenizer

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
METADATA_DIR = os.path.join("assets.extra", "keraspec")
METADATA_FILE = "export.json"
BASE_LOCK = ".keraspec.lock"
DIGESTS_FILE = "digests.json"
MODELS_CONFIG = "models.config"
# How close the served logits must be to the Keras model's (float32 arithmetic, same ops).
TOLERANCE = 1e-4


def _error(code: str, message: str, where: str, path: str = "") -> ExportError:
    return ExportError([Diagnostic("error", code, message, path, where)])


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote.

    Attributes:
        name: The TF Serving model name.
        version: The version directory written.
        path: BASE/NAME/VERSION.
        signatures: Per signature, its inputs and outputs as {name: [dtype, shape]}.
        size_bytes: Size of the version directory.
        max_logit_difference: Largest |served - Keras| logit on the verification input.
        step: Training step of the exported weights (None for --weights).
        models_config: Path of the models.config listing the model.
        batching_parameters: Path of BASE's batching parameters file (for the server's
            --enable_batching --batching_parameters_file).
        checkpoint: Which of the run's checkpoints was exported ("best" or "latest"; None
            for weights trained elsewhere).
    """

    name: str
    version: int
    path: str
    signatures: dict[str, dict[str, dict[str, list[Any]]]]
    size_bytes: int
    max_logit_difference: float
    step: Optional[int]
    models_config: str
    batching_parameters: str = ""
    checkpoint: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------- the serving module


_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _mix(tf: Any, x: Any) -> Any:
    """SplitMix64's finaliser on uint64 tensors: a counter-based hash, one row at a time."""
    x = x + tf.constant(_MIX[0], tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(30, tf.uint64)))
    x = x * tf.constant(_MIX[1], tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(27, tf.uint64)))
    x = x * tf.constant(_MIX[2], tf.uint64)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(31, tf.uint64)))


def row_keys(tf: Any, seed: Any) -> Any:
    """Each row's hash key [batch] uint64, from its seed alone."""
    return _mix(tf, tf.bitcast(seed, tf.uint64))


def row_uniform(tf: Any, keys: Any, t: Any) -> Any:
    """One uniform in (0, 1) per row [batch], from the row's own (key, step): a row's draw
    never depends on the other rows of its batch, so a server-side batcher merging
    requests changes no answer."""
    bits = _mix(tf, keys + tf.cast(t, tf.uint64))
    # 24 random bits (float32's precision) -> (0, 1).
    return (tf.cast(tf.bitwise.right_shift(bits, tf.constant(40, tf.uint64)), tf.float32)
            + 0.5) * (1.0 / 2.0**24)


def sample_rows(tf: Any, scaled: Any, uniform: Any) -> Any:
    """Inverse-CDF sampling, one uniform per row: the first id whose cumulative weight
    exceeds uniform x total. Masked ids (-inf) weigh 0, so they are never the first."""
    weights = tf.exp(scaled - tf.reduce_max(scaled, axis=1, keepdims=True))
    cumulative = tf.cumsum(weights, axis=1)
    # Strictly below the total, so that some id's cumulative weight exceeds it.
    target = uniform * cumulative[:, -1] * (1.0 - 1e-6)
    return tf.reduce_sum(tf.cast(cumulative <= target[:, None], tf.int32), axis=1)


def allowed_ids(spec: s.Spec, tokenizer: Optional[Tokenizer]) -> list[bool]:
    """Ids the sampler may produce: those the tokenizer knows, never padding."""
    vocab = spec.input.vocab_size
    used = tokenizer.size if tokenizer is not None else vocab
    return [i < used and i != PAD_ID for i in range(vocab)]


def one_token_step(tf: Any, model: Any, states: list[Any], spec: CheckedSpec) -> Optional[Any]:
    """The state model's one-token form: [B] ids and states -> [B, V] logits, new states.

    Recurrent layers are called through their cells (one step, no time loop); every other
    layer acts on each position alone, so it is called on [B, features]. Returns None when
    the graph holds a layer whose one step is neither (a backwards RNN, a concatenation
    along time): generation then runs the full layers on one-token sequences.
    """
    from compiler.build import call_graph

    graph = call_graph(spec.spec, spec.analysis)
    layers = {layer.name: layer for layer in model.layers}
    if not all(layer.steps_alone() for layer in spec.model.layers):
        return None
    by_layer: dict[str, list[int]] = {}
    for i, st in enumerate(states):
        by_layer.setdefault(st.layer, []).append(i)

    def step(token, state_values):
        values = {graph.input: token}
        new_states = list(state_values)
        for name, inputs in graph.layers:
            layer = layers[name]
            args = [values[n] for n in inputs]
            x = args if len(args) > 1 else args[0]
            if name in by_layer:
                mine = [state_values[i] for i in by_layer[name]]
                out, updated = layer.cell(x, mine, training=False)
                updated = tf.nest.flatten(updated)
                for i, value in zip(by_layer[name], updated):
                    new_states[i] = value
                values[name] = out
            else:
                values[name] = layer(x, training=False)
        return values[graph.output], new_states

    return step


def _serving_module(tf: Any, model: Any, states: list[Any], spec: s.Spec,
                    tokenizer: Optional[Tokenizer], signatures: list[str],
                    tokenizer_files: list[str]) -> tuple[Any, dict[str, Any]]:
    """A tf.Module holding the model and the signature functions."""
    vocab = spec.input.vocab_size
    input_name = spec.input.name
    limits = spec.export.limits
    record_start = list(start_tokens(unit_of(spec)))  # what a record's first token follows

    class Serving(tf.Module):
        pass

    module = Serving()
    # The variables only, not the Keras model: saving a Keras model also traces and writes
    # every layer's call functions, which the signatures do not need (and which are slow).
    module.weights = list(model.weights)
    module.assets = [tf.saved_model.Asset(path) for path in tokenizer_files]
    module.allowed = tf.constant(allowed_ids(spec, tokenizer))

    def within(value: Any, limit: int, what: str, field: str) -> Any:
        """An assertion that `value` (a scalar) is at most `limit`, naming the limit."""
        return tf.debugging.Assert(
            value <= limit,
            [f"{what}: expected at most export.limits.{field} = {limit}, received", value],
        )

    def checked_tokens(tokens: Any, what: str) -> list[Any]:
        shape = tf.shape(tokens)
        return [within(shape[0], limits.max_batch, f"{what} rows", "max_batch"),
                within(shape[1], limits.max_prompt_length, f"{what} length",
                       "max_prompt_length")]

    def zero_states(batch):
        return [tf.zeros([batch, st.units], tf.float32) for st in states]

    def run(tokens, state_values):
        outputs = model([tokens, *state_values], training=False)
        if not states:
            outputs = [outputs]
        return outputs[0], list(outputs[1:])

    one_token = one_token_step(tf, model, states, spec)

    def advance(token, state_values):
        """Logits [B, V] and states after one more token per row."""
        if one_token is not None:
            return one_token(token, state_values)
        logits, new_states = run(token[:, None], state_values)
        return logits[:, -1, :], new_states

    token_spec = tf.TensorSpec([None, None], tf.int32, name=input_name)

    @tf.function(input_signature=[token_spec], autograph=False)
    def serving_default(tokens):
        with tf.control_dependencies(checked_tokens(tokens, input_name)):
            tokens = tf.identity(tokens)
        logits, _ = run(tokens, zero_states(tf.shape(tokens)[0]))
        return {"logits": logits, "next_token_probs": tf.nn.softmax(logits[:, -1, :])}

    state_specs = [tf.TensorSpec([None, st.units], tf.float32, name=st.name) for st in states]

    @tf.function(input_signature=[token_spec, state_specs], autograph=False)
    def step(tokens, state_values):
        checks = checked_tokens(tokens, input_name)
        rows = tf.shape(tokens)[0]
        for st, value in zip(states, state_values):
            checks.append(tf.debugging.Assert(
                tf.shape(value)[0] == rows,
                [f"{st.name}: expected as many rows as {input_name}, received", tf.shape(value)[0],
                 f"rows for {input_name}'s", rows],
            ))
        with tf.control_dependencies(checks):
            tokens = tf.identity(tokens)
        logits, new_states = run(tokens, list(state_values))
        out = {"logits": logits}
        out.update({st.name: value for st, value in zip(states, new_states)})
        return out

    def checked_rows(prompt_rows, max_new_tokens, temperature, seed) -> list[Any]:
        """Per-row inputs: one value per prompt row, in range, before anything is built."""
        checks = [within(prompt_rows, limits.max_batch, "prompt rows", "max_batch")]
        for name, value in (("max_new_tokens", max_new_tokens), ("temperature", temperature),
                            ("seed", seed)):
            checks.append(tf.debugging.Assert(
                tf.shape(value)[0] == prompt_rows,
                [f"{name}: expected one value per prompt row (", prompt_rows, "), received",
                 tf.shape(value)[0]],
            ))
        checks.append(within(tf.reduce_max(tf.concat([max_new_tokens, [0]], 0)),
                             limits.max_new_tokens, "max_new_tokens", "max_new_tokens"))
        checks.append(tf.debugging.Assert(
            tf.reduce_all(max_new_tokens >= 0),
            ["max_new_tokens: expected values >= 0, received", max_new_tokens]))
        checks.append(tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(temperature) & (temperature >= 0)),
            ["temperature: expected finite values >= 0 (0 is greedy), received", temperature]))
        return checks

    def sample_loop(prompt, max_new_tokens, temperature, seed):
        """Prompt ids [B, P] right-padded with 0, per-row budgets, temperatures and seeds
        -> generated ids [B, N], lengths, complete. Each row depends on its own inputs only.

        The prompt positions every row has are consumed in one pass of the full layers;
        then each iteration samples one token per row from the current logits and feeds
        one token per row (the rest of a longer prompt, or the token just sampled) through
        the layers' one-step form. Sampled tokens go to a TensorArray, one [B] entry per
        iteration; each row's tokens are gathered from it at the end.
        """
        batch = tf.shape(prompt)[0]
        sequence = tf.concat(
            [tf.tile(tf.constant([record_start], tf.int32), [batch, 1]), prompt], axis=1)
        lengths = len(record_start) + tf.reduce_sum(tf.cast(prompt != PAD_ID, tf.int32), axis=1)
        width = tf.shape(sequence)[1]
        max_new = max_new_tokens
        longest = tf.reduce_max(tf.concat([max_new, [0]], 0))
        greedy_rows = temperature <= 0
        # Dividing by the temperature first, masking after: no temperature reaches a
        # masked id (an infinite one only makes the allowed ids equally likely).
        scale = tf.where(greedy_rows, 1.0, temperature)[:, None]
        keys = row_keys(tf, seed)
        common = tf.reduce_min(tf.concat([lengths, [width]], 0))  # prompt every row has
        logits, first_states = run(sequence[:, :common], zero_states(batch))
        first = common - 1  # the position the first logits are for

        def body(t, logits, state_values, drawn_ta, generated, done):
            # Greedy rows (T = 0) take the argmax; the others sample softmax(logits / T).
            scaled = tf.where(module.allowed, logits / scale, -np.inf)
            sampled = tf.where(
                greedy_rows,
                tf.argmax(scaled, axis=-1, output_type=tf.int32),
                sample_rows(tf, scaled, row_uniform(tf, keys, t)),
            )
            generating = (t >= lengths - 1) & ~done
            writes = generating & (sampled != EOR_ID)
            drawn_ta = drawn_ta.write(t - first, sampled)
            generated = generated + tf.cast(writes, tf.int32)
            ended = generating & ((sampled == EOR_ID) | (generated >= max_new))
            next_prompt = tf.gather(sequence, tf.minimum(t + 1, width - 1), axis=1)
            token = tf.where(t + 1 < lengths, next_prompt, sampled)
            logits, state_values = advance(token, state_values)
            return t + 1, logits, state_values, drawn_ta, generated, done | ended

        last = tf.reduce_max(lengths) - 1 + longest  # no row can need a later step

        def more(t, logits, state_values, drawn_ta, generated, done):
            return (t < last) & ~tf.reduce_all(done)

        start = (
            first,
            logits[:, -1, :],
            first_states,
            tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
            tf.zeros([batch], tf.int32),
            max_new <= 0,
        )
        shapes = (
            tf.TensorShape([]),
            tf.TensorShape([None, vocab]),
            [tf.TensorShape([None, st.units]) for st in states],
            tf.TensorShape(None),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
        )
        _, _, _, drawn_ta, generated, done = tf.while_loop(
            more, body, start, shape_invariants=shapes, maximum_iterations=None
        )
        # Row b's k-th token was drawn at step lengths[b] - 1 + k: entry lengths[b] - common + k.
        steps = tf.transpose(drawn_ta.stack())  # [B, iterations]
        steps = tf.concat([steps, tf.zeros([batch, longest], tf.int32)], axis=1)
        offsets = (lengths - common)[:, None] + tf.range(longest)[None, :]
        out = tf.gather(steps, offsets, batch_dims=1)
        out = tf.where(tf.range(longest)[None, :] < generated[:, None], out, 0)
        complete = done & (generated < max_new)  # ended by <eor>, not by the budget
        return out, generated, complete

    per_row = [
        tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
        tf.TensorSpec([None], tf.float32, name="temperature"),
        tf.TensorSpec([None], tf.int64, name="seed"),
    ]

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="prompt"), *per_row],
        autograph=False,
    )
    def generate(prompt, max_new_tokens, temperature, seed):
        checks = checked_rows(tf.shape(prompt)[0], max_new_tokens, temperature, seed)
        checks.append(within(tf.shape(prompt)[1], limits.max_prompt_length, "prompt length",
                             "max_prompt_length"))
        with tf.control_dependencies(checks):
            prompt, max_new_tokens, temperature, seed = (
                tf.identity(x) for x in (prompt, max_new_tokens, temperature, seed))
        out, lengths, complete = sample_loop(prompt, max_new_tokens, temperature, seed)
        return {"tokens": out, "lengths": lengths, "complete": complete}

    functions = {"serving_default": serving_default, "step": step, "generate": generate}

    if "generate_text" in signatures:
        chars = tokenizer.chars  # type: ignore[union-attr]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(chars, tf.string), tf.range(2, len(chars) + 2, dtype=tf.int32)
            ),
            default_value=-1,
        )
        module.table = table
        module.vocab = tf.constant(["", "", *chars], tf.string)

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.string, name="prompt"), *per_row],
            autograph=False,
        )
        def generate_text(prompt, max_new_tokens, temperature, seed):
            # Bounds first: the padded prompt (rows x longest row) is at most
            # max_batch x max_prompt_chars before it is built.
            checks = checked_rows(tf.shape(prompt)[0], max_new_tokens, temperature, seed)
            longest = tf.reduce_max(tf.concat(
                [tf.strings.length(prompt, unit="UTF8_CHAR"), [0]], 0))
            checks.append(within(longest, limits.max_prompt_chars, "prompt characters",
                                 "max_prompt_chars"))
            with tf.control_dependencies(checks):
                prompt, max_new_tokens, temperature, seed = (
                    tf.identity(x) for x in (prompt, max_new_tokens, temperature, seed))
            pieces = tf.strings.unicode_split(prompt, "UTF-8")
            ids = tf.ragged.map_flat_values(table.lookup, pieces)
            known = tf.debugging.assert_non_negative(
                ids.flat_values,
                message="prompt holds a character the model's vocabulary does not have",
            )
            with tf.control_dependencies([known]):  # check before any lookup uses the ids
                dense = tf.identity(ids.to_tensor(default_value=PAD_ID))
            out, lengths, complete = sample_loop(dense, max_new_tokens, temperature, seed)
            mask = tf.sequence_mask(lengths, tf.shape(out)[1])
            text = tf.strings.reduce_join(
                tf.where(mask, tf.gather(module.vocab, out), ""), axis=1
            )
            return {"text": prompt + text, "complete": complete}

        functions["generate_text"] = generate_text

    return module, {name: functions[name] for name in signatures}


# -------------------------------------------------------------------------------- export


def resolve_export(path: Union[str, os.PathLike[str]]) -> Optional[str]:
    """The version directory `path` names: itself (BASE/NAME/VERSION), or the highest
    numeric version under it (BASE/NAME), as TF Serving picks; None when it is neither."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isdir(path):
        versions = [n for n in os.listdir(path) if n.isdigit()
                    and os.path.isfile(os.path.join(path, n, "saved_model.pb"))]
        if versions:
            return os.path.join(path, max(versions, key=int))
    return None


def read_metadata(version_dir: str) -> dict[str, Any]:
    """The export.json keraspec writes beside a SavedModel ({} for other SavedModels)."""
    try:
        with open(os.path.join(version_dir, METADATA_DIR, METADATA_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _signature_list(spec: s.Spec, tokenizer: Optional[Tokenizer], where: str) -> list[str]:
    text_ok = isinstance(tokenizer, CharTokenizer)
    wanted = s.signatures_to_export(spec.export, text_in_graph=text_ok)
    if "generate_text" in wanted and not text_ok:
        kind = "no tokenizer" if tokenizer is None else f"the {tokenizer.kind} tokenizer"
        raise _error(
            "generate_text",
            f"expected the char tokenizer for generate_text (its ops are in every TF Serving "
            f"build), received {kind}; remove generate_text from export.signatures",
            where,
            "export.signatures",
        )
    return wanted


def _next_version(model_dir: str, first: int) -> int:
    taken = [int(n) for n in os.listdir(model_dir) if n.isdigit()] if os.path.isdir(
        model_dir) else []
    return max([first - 1, *taken]) + 1


def signature_info(fn: Any) -> dict[str, dict[str, list[Any]]]:
    """A loaded signature's inputs and outputs as {name: [dtype, shape]}."""

    def describe(specs: dict[str, Any]) -> dict[str, list[Any]]:
        return {
            name: [spec.dtype.name, None if spec.shape.rank is None else spec.shape.as_list()]
            for name, spec in sorted(specs.items())
        }

    return {
        "inputs": describe(fn.structured_input_signature[1]),
        "outputs": describe(fn.structured_outputs),
    }


def _warmup_inputs(tf: Any, name: str, states: list[Any], spec: s.Spec,
                   tokenizer: Optional[Tokenizer]) -> dict[str, Any]:
    tokens = [[EOR_ID, 2, 3], [EOR_ID, 3, 2]]
    if name == "serving_default":
        return {spec.input.name: tf.constant(tokens, tf.int32)}
    if name == "step":
        return {
            spec.input.name: tf.constant(tokens, tf.int32),
            **{st.name: tf.zeros([2, st.units]) for st in states},
        }
    common = {  # per row: a server-side batcher merges requests along the first dimension
        "max_new_tokens": tf.constant([4, 2], tf.int32),
        "temperature": tf.constant([1.0, 0.0], tf.float32),
        "seed": tf.constant([0, 1], tf.int64),
    }
    if name == "generate":
        return {"prompt": tf.constant([[2, 3], [3, 0]], tf.int32), **common}
    first = tokenizer.chars[0] if tokenizer is not None and tokenizer.chars else ""  # type: ignore
    return {"prompt": tf.constant([first, ""]), **common}


def _write_warmup(tf: Any, path: str, model_name: str, requests: dict[str, dict[str, Any]]) -> None:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


@contextlib.contextmanager
def base_lock(base: str) -> Iterator[None]:
    """Hold BASE's lock (an OS file lock on BASE/.keraspec.lock) while its shared files,
    models.config and batching_parameters.txt, are read, changed and replaced."""
    os.makedirs(base, exist_ok=True)
    fd = os.open(os.path.join(base, BASE_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_models_config(base: str) -> Any:
    """BASE/models.config as a ModelServerConfig (empty when there is none).

    Raises:
        ExportError: it exists and does not parse.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = os.path.join(base, MODELS_CONFIG)
    config = model_server_config_pb2.ModelServerConfig()
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                text_format.Parse(f.read(), config)
        except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
            raise _error("models_config", f"expected a ModelServerConfig text proto, "
                         f"received one that does not parse ({e}); fix or remove it: nothing "
                         "was exported", path) from e
    return config


def update_models_config(base: str, name: str, serving_root: str) -> str:
    """Create or update BASE/models.config (TF Serving's model_config_list) to list NAME.

    Call it holding `base_lock`: concurrent exports then each add their entry.

    Raises:
        ExportError: an existing models.config does not parse.
    """
    from google.protobuf import text_format

    path = os.path.join(base, MODELS_CONFIG)
    config = read_models_config(base)
    entries = config.model_config_list.config
    base_path = f"{serving_root.rstrip('/')}/{name}"
    for entry in entries:
        if entry.name == name:
            entry.base_path = base_path
            entry.model_platform = "tensorflow"
            break
    else:
        entries.add(name=name, base_path=base_path, model_platform="tensorflow")
    write_atomic(path, text_format.MessageToString(config))
    return path


def _directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def export_saved_model(
    source: Union[str, os.PathLike[str], s.Spec, CheckedSpec],
    base: Union[str, os.PathLike[str]],
    *,
    version: Optional[int] = None,
    name: Optional[str] = None,
    weights: Optional[str] = None,
    tokenizer_dir: Optional[str] = None,
    record_shape: Optional[dict[str, Any]] = None,
    checkpoint: str = "best",
    serving_root: str = "/models",
) -> ExportReport:
    """Export a trained model as BASE/NAME/VERSION for TF Serving.

    Args:
        source: A run directory written by `train`; or, with `weights`, a spec (path or
            resolved `Spec`) whose weights were trained elsewhere.
        base: The model base directory TF Serving is pointed at.
        version: The version to write (an existing one is an error); default: the next
            free number, starting at the spec's export.version.
        name: The model name (default: the spec's name).
        weights: A TensorFlow checkpoint prefix or Keras weights file, with a spec source.
        tokenizer_dir: With `weights`: a directory holding a keraspec tokenizer.json (gives
            generate_text and the assets); optional.
        record_shape: With `weights`: the training records' delimiter and field count
            ({"delimiter": ",", "fields": 6}), so generation can check records.
        checkpoint: With a run directory: "best" or "latest".
        serving_root: Where BASE is mounted in the server (models.config's base_path).

    Returns:
        What was written, with the verification result.

    Raises:
        RunError: the run holds no trained checkpoint, or the weights do not load.
        ExportError: the version exists, the spec's signatures cannot be written, BASE is
            not writable, or the exported model does not reproduce the Keras model's logits.
    """
    from compiler.build import build_state_model, compile_spec
    from compiler.data.columns import Validators, load_validators
    from compiler.lang.parse import load_spec
    from compiler.rundir import SPEC_FILE, RunDir, run_provenance
    from compiler.tf import tensorflow
    from compiler.data.tokenizer import load_tokenizer
    from compiler.weights import copy_weights, load_weights, reshaped_spec

    step: Optional[int] = None
    if weights is None:
        run_dir = os.fspath(source)  # type: ignore[arg-type]
        run = RunDir(run_dir)
        pointer = run.trained_checkpoint(checkpoint)
        run.verify_files()
        spec = load_spec(run.file(SPEC_FILE))
        tokenizer: Optional[Tokenizer] = load_tokenizer(run_dir)
        tokenizer_dir = run_dir
        weights_path = pointer["prefix"]
        step = int(pointer["step"])
        record_shape = run.read_run().get("record_shape")
        validators = load_validators(run_dir, record_shape)
        provenance = run_provenance(run)
    else:
        provenance = None
        validators = Validators.from_shape(record_shape) if record_shape else None
        spec = (checked(source) if isinstance(source, (s.Spec, CheckedSpec))
                else load_spec(source))
        tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else None
        weights_path = weights
    where = os.fspath(base)
    name = name or spec.name
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise _error("model_name", f"expected a model name of letters, digits, _ and -, "
                     f"received {name!r}", where)
    signatures = _signature_list(spec, tokenizer, where)
    if tokenizer is not None and tokenizer.size > spec.input.vocab_size:
        raise _error("vocab_size", f"expected a tokenizer of at most input.vocab_size = "
                     f"{spec.input.vocab_size} ids, received {tokenizer.size}", where)

    model_dir = os.path.join(where, name)
    for path in (model_dir, os.path.join(where, MODELS_CONFIG)):
        if os.path.islink(path):
            raise _error("base_link", "expected a plain file or directory, received a "
                         "symbolic link: keraspec never writes through a link out of -o", path)
    read_models_config(where)  # a models.config that does not parse: before anything is written
    if version is None:
        version = _next_version(model_dir, spec.export.version)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise _error("version_exists", f"expected a new version, received {version}, which "
                     f"exists already in {model_dir}; versions are never overwritten", final)
    tf = tensorflow()
    serving_spec = reshaped_spec(spec, batch_size=None, stateful=False)
    trained = compile_spec(serving_spec).model
    if weights is None:
        with run.reading(checkpoint) as held:  # a training run's cleanup leaves it in place
            load_weights(trained, held["prefix"])
            weights_path, step = held["prefix"], int(held["step"])
    else:
        load_weights(trained, weights_path)
    model, states = build_state_model(serving_spec)
    copy_weights(trained, model)
    files = []
    if tokenizer is not None:
        files = [os.path.join(tokenizer_dir, n) for n in tokenizer.files()]
    module, functions = _serving_module(tf, model, states, spec, tokenizer, signatures, files)

    try:
        os.makedirs(model_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=model_dir)
    except OSError as e:
        raise _error("base_unwritable", f"expected a writable directory, received: "
                     f"{e.strerror or e}", where) from e
    try:
        with resource_errors(where, f"export version {version}", "nothing was published; make "
                             "room and export again", ExportError):
            difference, info = _write_version(
                tf, tmp, module, functions, trained, spec, tokenizer, signatures, states, name,
                version, step, record_shape, provenance, validators, where)
        if os.path.exists(final):  # another export took this version meanwhile
            raise _error("version_exists", f"expected a new version, received {version}, "
                         "written meanwhile by another export", final)
        os.rename(tmp, final)
        fsync_directory(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with resource_errors(where, MODELS_CONFIG, f"version {version} is published in {final}; "
                         "make room and export again to list it", ExportError), base_lock(where):
        config = update_models_config(where, name, serving_root)
        batching = write_batching_parameters(where, spec.export.limits)
    return ExportReport(
        name=name,
        version=version,
        path=final,
        signatures=info,
        size_bytes=_directory_size(final),
        max_logit_difference=difference,
        step=step,
        models_config=config,
        batching_parameters=batching,
        checkpoint=checkpoint if weights is None else None,
    )


def _verify(tf: Any, path: str, keras_model: Any, spec: s.Spec,
            requests: dict[str, dict[str, Any]], where: str,
            allowed: Optional[list[bool]] = None) -> tuple[float, dict[str, Any]]:
    """Load the SavedModel back, run every signature, compare logits with the Keras model's.

    Returns:
        The largest logit difference, and each signature's inputs and outputs.
    """
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, spec.input.vocab_size, size=(3, 7)).astype(np.int32)
    served = loaded.signatures["serving_default"](**{spec.input.name: tf.constant(tokens)})
    expected = keras_model(tokens, training=False).numpy()
    difference = float(np.max(np.abs(served["logits"].numpy() - expected)))
    if not difference <= TOLERANCE:
        raise _error("verification", f"expected the exported logits to equal the Keras "
                     f"model's within {TOLERANCE}, received a difference of {difference:.3g}",
                     where)
    for signature, inputs in requests.items():
        loaded.signatures[signature](**inputs)
    if "generate" in loaded.signatures:
        _verify_greedy(tf, loaded, spec, where, allowed or allowed_ids(spec, None))
    return difference, {n: signature_info(loaded.signatures[n]) for n in requests}


def _verify_greedy(tf: Any, loaded: Any, spec: s.Spec, where: str, allowed: list[bool],
                   tokens: int = 6) -> None:
    """At temperature 0, `generate` must equal a greedy loop over `serving_default`."""
    prompts = [[2, 2], [2, 0]]  # rows of different lengths, right-padded with 0
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts, tf.int32), max_new_tokens=tf.fill([2], tokens),
        temperature=tf.zeros([2]), seed=tf.zeros([2], tf.int64))
    mask = np.array(allowed)
    for row, prompt in enumerate(prompts):
        ids = list(start_tokens(unit_of(spec))) + [i for i in prompt if i != PAD_ID]
        expected: list[int] = []
        for _ in range(tokens):
            logits = loaded.signatures["serving_default"](
                **{spec.input.name: tf.constant([ids + expected], tf.int32)})["logits"]
            nxt = int(np.argmax(np.where(mask, logits.numpy()[0, -1], -np.inf)))
            if nxt == EOR_ID:
                break
            expected.append(nxt)
        got = out["tokens"].numpy()[row, : int(out["lengths"][row])].tolist()
        if got != expected:
            raise _error("verification", f"expected generate at temperature 0 to equal a "
                         f"greedy loop over serving_default, received {got} for {expected}",
                         where)

def _write_version(tf, tmp, module, functions, trained, spec, tokenizer, signatures, states,
                   name, version, step, record_shape, provenance, validators, where):
    """Write a version's SavedModel, warm-up requests and metadata into `tmp`, verify it,
    and record every file's digest; returns the verification (difference, signatures)."""
    from compiler.data.columns import VALIDATORS_FILE, validators_json

    concrete = {n: fn.get_concrete_function() for n, fn in functions.items()}
    tf.saved_model.save(module, tmp, signatures=concrete)
    requests = {n: _warmup_inputs(tf, n, states, spec, tokenizer) for n in signatures}
    _write_warmup(tf, os.path.join(tmp, WARMUP_FILE), name, requests)
    difference, info = _verify(tf, tmp, trained, spec, requests, where,
                               allowed_ids(spec, tokenizer))
    metadata = {
        "name": name,
        "version": version,
        "step": step,
        "signatures": info,
        "tokenizer": None if tokenizer is None else tokenizer.kind,
        "eor_id": EOR_ID,
        "start_tokens": list(start_tokens(unit_of(spec))),
        "pad_id": PAD_ID,
        "states": [dataclasses.asdict(st) for st in states],
        "max_logit_difference": difference,
        "record_shape": record_shape,
        "run": provenance,
    }
    meta_dir = os.path.join(tmp, METADATA_DIR)
    os.makedirs(meta_dir, exist_ok=True)
    with open(os.path.join(meta_dir, "spec.resolved.yaml"), "w", encoding="utf-8") as f:
        f.write(dump_yaml(to_data(spec)))
    with open(os.path.join(meta_dir, METADATA_FILE), "w", encoding="utf-8") as f:
        f.write(json.dumps(metadata, indent=2) + "\n")
    if validators is not None:
        with open(os.path.join(meta_dir, VALIDATORS_FILE), "wb") as f:
            f.write(validators_json(validators))
    with open(os.path.join(meta_dir, DIGESTS_FILE), "w", encoding="utf-8") as f:
        f.write(json.dumps(tree_digests(tmp), indent=1) + "\n")
    fsync_tree(tmp)
    return difference, info


def tree_digests(root: str) -> dict[str, str]:
    """sha256 of every file under `root` (but the digest file), by relative path."""
    out = {}
    for directory, _, files in os.walk(root):
        for n in files:
            full = os.path.join(directory, n)
            relative = os.path.relpath(full, root)
            if relative != os.path.join(METADATA_DIR, DIGESTS_FILE):
                out[relative] = file_sha256(full)
    return dict(sorted(out.items()))


def verify_export(version_dir: str) -> None:
    """Check every file of an export against the digests written with it.

    Exports written before digests were (no digests.json) are not checked.

    Raises:
        ExportError: a file is missing, or its content is not what was exported.
    """
    path = os.path.join(version_dir, METADATA_DIR, DIGESTS_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            digests = json.load(f)
        if not isinstance(digests, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        raise _error("export_corrupt", f"expected the export's digests, received a file that "
                     f"does not read ({e}); export the run again", path) from None
    found = digest_mismatch(version_dir, digests)
    if found is None:
        return
    full, missing = found
    if missing:
        raise _error("export_corrupt", "expected the export's file, received no such "
                     "file: the version is incomplete; export the run again", full)
    raise _error("export_corrupt", "expected the file as it was exported, received "
                 "different content (truncated or edited); export the run again", full)



def inspect_export(path: Union[str, os.PathLike[str]]) -> Optional[dict[str, Any]]:
    """An export's name, version, size, signatures (from its SignatureDefs) and spec.

    Returns:
        None when `path` is not an export.

    Raises:
        ExportError: a file of the export is missing or not what was exported.
    """
    from compiler.tf import tensorflow

    version_dir = resolve_export(path)
    if version_dir is None:
        return None
    verify_export(version_dir)
    tf = tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())

    def describe(tensors: Any) -> dict[str, list[Any]]:
        return {
            key: [
                tf.dtypes.as_dtype(info.dtype).name,
                None if info.tensor_shape.unknown_rank
                else [None if d.size < 0 else d.size for d in info.tensor_shape.dim],
            ]
            for key, info in sorted(tensors.items())
        }

    signatures = {
        name: {"inputs": describe(sig.inputs), "outputs": describe(sig.outputs)}
        for meta in saved.meta_graphs
        for name, sig in sorted(meta.signature_def.items())
        if not name.startswith("__")
    }
    metadata = read_metadata(version_dir)
    spec_path = os.path.join(version_dir, METADATA_DIR, "spec.resolved.yaml")
    spec_text = open(spec_path, encoding="utf-8").read() if os.path.isfile(spec_path) else None
    return {
        "name": os.path.basename(os.path.dirname(os.path.abspath(version_dir))),
        "version": int(os.path.basename(version_dir)),
        "path": version_dir,
        "size_bytes": _directory_size(version_dir),
        "step": metadata.get("step"),
        "tokenizer": metadata.get("tokenizer"),
        "record_shape": metadata.get("record_shape"),
        "signatures": signatures,
        "spec": spec_text,
    }
