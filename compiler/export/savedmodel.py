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

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Any, Optional, Union

import numpy as np

from compiler.data.automaton import Automaton, compile_automaton
from compiler.data.dataset import start_tokens, unit_of
from compiler.data.tokenizer import EOR_ID, PAD_ID, CharTokenizer, Tokenizer
from compiler.diagnostics import ExportError
from compiler.export.batching import write_batching_parameters
from compiler.export.module import serving_module_class
from compiler.export.serving import (
    MODELS_CONFIG,
    _error,
    base_lock,
    read_models_config,
    update_models_config,
)
from compiler.export.signatures import (
    TOLERANCE,
    WARMUP_FILE,
    _warmup_inputs,
    _write_warmup,
    allowed_ids,
    example_prompts,
    signature_info,
)
from compiler.files import (
    digest_mismatch,
    file_sha256,
    fsync_directory,
    fsync_tree,
    resource_errors,
)
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec, checked
from compiler.lang.render import dump_yaml, to_data
from compiler.layers.states import context_length

METADATA_DIR = os.path.join("assets.extra", "keraspec")


METADATA_FILE = "export.json"


DIGESTS_FILE = "digests.json"


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


def resolve_export(path: Union[str, os.PathLike[str]]) -> Optional[str]:
    """The version directory `path` names: itself (BASE/NAME/VERSION), or the highest
    numeric version under it (BASE/NAME), as TF Serving picks; None when it is neither."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isdir(path):
        versions = [
            n
            for n in os.listdir(path)
            if n.isdigit() and os.path.isfile(os.path.join(path, n, "saved_model.pb"))
        ]
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
    wanted = s.signatures_to_export(spec, text_in_graph=text_ok)
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
    taken = (
        [int(n) for n in os.listdir(model_dir) if n.isdigit()] if os.path.isdir(model_dir) else []
    )
    return max([first - 1, *taken]) + 1


def directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


@dataclasses.dataclass(frozen=True)
class _Trained:
    """What an export is made of, whichever way it came: a run's checkpoint, or a spec with
    weights trained elsewhere.

    Attributes:
        spec: The checked spec.
        tokenizer: Its tokenizer, and the directory holding its files (None without one).
        record_shape: The records' delimiter and field count, for generation's checks.
        validators: The run's column rules (the field count only, or None, without them).
        provenance: What the export keeps of its run (None for weights from elsewhere).
        weights: A checkpoint prefix or weights file, for `weights`; None: the run's.
        run: The run directory (None for weights from elsewhere).
    """

    spec: CheckedSpec
    tokenizer: Optional[Tokenizer]
    tokenizer_dir: Optional[str]
    record_shape: Optional[dict[str, Any]]
    validators: Any
    provenance: Optional[dict[str, Any]]
    weights: Optional[str] = None
    run: Any = None
    start: Optional[tuple[int, ...]] = None  # a run's start tokens (None: the spec's)

    @property
    def record_start(self) -> list[int]:
        return list(self.start if self.start is not None else start_tokens(unit_of(self.spec)))

    def load_into(self, model: Any, checkpoint: str) -> Optional[int]:
        """Load the weights into `model`; returns the checkpoint's step (None for weights
        trained elsewhere)."""
        from compiler.training.weights import load_weights

        if self.run is None:
            load_weights(model, self.weights)
            return None
        with self.run.reading(checkpoint) as held:  # a training run's cleanup leaves it
            load_weights(model, held.prefix)
            return held.step


def _resolve(
    source: Union[str, os.PathLike[str], s.Spec, CheckedSpec],
    weights: Optional[str],
    tokenizer_dir: Optional[str],
    record_shape: Optional[dict[str, Any]],
    checkpoint: str,
) -> _Trained:
    """The run directory, or the spec and weights trained elsewhere, as one `_Trained`."""
    from compiler.data.columns import Validators
    from compiler.data.tokenizer import load_tokenizer
    from compiler.lang.parse import load_spec
    from compiler.training.trained import open_trained

    if weights is None:
        trained = open_trained(os.fspath(source), checkpoint)  # type: ignore[arg-type]
        return _Trained(
            trained.spec,
            trained.tokenizer,
            trained.run.path,
            trained.identity.record_shape,
            trained.validators,
            trained.provenance(),
            run=trained.run,
            start=trained.start,
        )
    spec = checked(source) if isinstance(source, (s.Spec, CheckedSpec)) else load_spec(source)
    return _Trained(
        spec,
        load_tokenizer(tokenizer_dir) if tokenizer_dir else None,
        tokenizer_dir,
        record_shape,
        Validators.from_shape(record_shape) if record_shape else None,
        None,
        weights=weights,
    )


@dataclasses.dataclass(frozen=True)
class _Served:
    """The serving side of an export: the tf.Module and its signatures' functions, the
    trained Keras model they are verified against, and the states they carry."""

    module: Any
    functions: dict[str, Any]
    trained: Any
    signatures: list[str]
    states: list[Any]
    automaton: Optional[Automaton] = None


def _automaton(origin: _Trained, signatures: list[str], where: str) -> Optional[Automaton]:
    """The automaton `generate` and `generate_text` are constrained by: the run's
    validators over its vocabulary (None without validators, a tokenizer or generation)."""
    if (
        origin.validators is None
        or origin.tokenizer is None
        or not {"generate", "generate_text"} & set(signatures)
    ):
        return None
    try:
        return compile_automaton(origin.validators, origin.tokenizer, origin.spec.input.vocab_size)
    except ValueError as e:
        raise _error(
            "automaton", f"expected validators that some record can pass, received: {e}", where
        ) from None


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
    from compiler.tf import tensorflow
    from compiler.training.weights import copy_weights, reshaped_spec

    origin = _resolve(source, weights, tokenizer_dir, record_shape, checkpoint)
    spec, tokenizer = origin.spec, origin.tokenizer
    where = os.fspath(base)
    name = name or spec.name
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise _error(
            "model_name",
            f"expected a model name of letters, digits, _ and -, " f"received {name!r}",
            where,
        )
    signatures = _signature_list(spec, tokenizer, where)
    if tokenizer is not None and tokenizer.size > spec.input.vocab_size:
        raise _error(
            "vocab_size",
            f"expected a tokenizer of at most input.vocab_size = "
            f"{spec.input.vocab_size} ids, received {tokenizer.size}",
            where,
        )

    model_dir = os.path.join(where, name)
    for path in (model_dir, os.path.join(where, MODELS_CONFIG)):
        if os.path.islink(path):
            raise _error(
                "base_link",
                "expected a plain file or directory, received a "
                "symbolic link: keraspec never writes through a link out of -o",
                path,
            )
    read_models_config(where)  # a models.config that does not parse: before anything is written
    if version is None:
        version = _next_version(model_dir, spec.export.version)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise _error(
            "version_exists",
            f"expected a new version, received {version}, which "
            f"exists already in {model_dir}; versions are never overwritten",
            final,
        )
    tf = tensorflow()
    serving_spec = reshaped_spec(spec, batch_size=None, stateful=False)
    trained = compile_spec(serving_spec).model
    step = origin.load_into(trained, checkpoint)
    model, states = build_state_model(serving_spec)
    copy_weights(trained, model)
    files = []
    if tokenizer is not None:
        files = [os.path.join(origin.tokenizer_dir, n) for n in tokenizer.files()]
    automaton = _automaton(origin, signatures, where)
    module = serving_module_class()(
        model, states, spec, tokenizer, signatures, files, automaton, origin.record_start
    )
    served = _Served(module, module.exported, trained, signatures, states, automaton)

    try:
        os.makedirs(model_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=model_dir)
    except OSError as e:
        raise _error(
            "base_unwritable",
            f"expected a writable directory, received: " f"{e.strerror or e}",
            where,
        ) from e
    try:
        with resource_errors(
            where,
            f"export version {version}",
            "nothing was published; make " "room and export again",
            ExportError,
        ):
            difference, info = _write_version(tf, tmp, served, origin, name, version, step, where)
        if os.path.exists(final):  # another export took this version meanwhile
            raise _error(
                "version_exists",
                f"expected a new version, received {version}, "
                "written meanwhile by another export",
                final,
            )
        os.rename(tmp, final)
        fsync_directory(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with (
        resource_errors(
            where,
            MODELS_CONFIG,
            f"version {version} is published in {final}; " "make room and export again to list it",
            ExportError,
        ),
        base_lock(where),
    ):
        config = update_models_config(where, name, serving_root)
        batching = write_batching_parameters(where, spec.export.limits)
    return ExportReport(
        name=name,
        version=version,
        path=final,
        signatures=info,
        size_bytes=directory_size(final),
        max_logit_difference=difference,
        step=step,
        models_config=config,
        batching_parameters=batching,
        checkpoint=checkpoint if weights is None else None,
    )


def _verify(
    tf: Any,
    path: str,
    keras_model: Any,
    spec: s.Spec,
    requests: dict[str, dict[str, Any]],
    where: str,
    allowed: Optional[list[bool]] = None,
    automaton: Optional[Automaton] = None,
    prompts: Optional[list[list[int]]] = None,
    record_start: Optional[list[int]] = None,
) -> tuple[float, dict[str, Any]]:
    """Load the SavedModel back, run every signature, compare logits with the Keras model's.

    Returns:
        The largest logit difference, and each signature's inputs and outputs.
    """
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    length = min(7, context_length(spec) or 7)  # within a position table's rows
    tokens = rng.integers(2, spec.input.vocab_size, size=(3, length)).astype(np.int32)
    served = loaded.signatures["serving_default"](**{spec.input.name: tf.constant(tokens)})
    expected = keras_model(tokens, training=False).numpy()
    difference = float(np.max(np.abs(served["logits"].numpy() - expected)))
    if not difference <= TOLERANCE:
        raise _error(
            "verification",
            f"expected the exported logits to equal the Keras "
            f"model's within {TOLERANCE}, received a difference of {difference:.3g}",
            where,
        )
    for signature, inputs in requests.items():
        loaded.signatures[signature](**inputs)
    if "generate" in loaded.signatures:
        _verify_greedy(
            tf,
            loaded,
            spec,
            where,
            allowed or allowed_ids(spec, None),
            automaton,
            prompts or example_prompts(automaton, spec.input.vocab_size),
            record_start or list(start_tokens(unit_of(spec))),
        )
    return difference, {n: signature_info(loaded.signatures[n]) for n in requests}


def _verify_greedy(
    tf: Any,
    loaded: Any,
    spec: s.Spec,
    where: str,
    allowed: list[bool],
    automaton: Optional[Automaton],
    prompts: list[list[int]],
    record_start: list[int],
    tokens: int = 6,
) -> None:
    """At temperature 0, `generate` must equal a greedy loop over `serving_default` (masked
    by the automaton, when generation is constrained)."""
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts, tf.int32),
        max_new_tokens=tf.fill([2], tokens),
        temperature=tf.zeros([2]),
        seed=tf.zeros([2], tf.int64),
    )
    mask = np.array(allowed)
    for row, prompt in enumerate(prompts):
        ids = record_start + [i for i in prompt if i != PAD_ID]
        expected: list[int] = []
        for _ in range(tokens):
            logits = loaded.signatures["serving_default"](
                **{spec.input.name: tf.constant([ids + expected], tf.int32)}
            )["logits"]
            rule = mask
            if automaton is not None:
                state = automaton.walk([i for i in prompt if i != PAD_ID] + expected)
                rule = mask & automaton.allowed(np.array([state]))[0]
            nxt = int(np.argmax(np.where(rule, logits.numpy()[0, -1], -np.inf)))
            if nxt == EOR_ID:
                break
            expected.append(nxt)
        got = out["tokens"].numpy()[row, : int(out["lengths"][row])].tolist()
        if got != expected:
            raise _error(
                "verification",
                f"expected generate at temperature 0 to equal a "
                f"greedy loop over serving_default, received {got} for {expected}",
                where,
            )


def _write_version(
    tf: Any,
    tmp: str,
    served: _Served,
    origin: _Trained,
    name: str,
    version: int,
    step: Optional[int],
    where: str,
) -> tuple[float, dict[str, Any]]:
    """Write a version's SavedModel, warm-up requests and metadata into `tmp`, verify it,
    and record every file's digest; returns the verification (difference, signatures)."""
    from compiler.data.columns import VALIDATORS_FILE, validators_json

    spec, tokenizer, states = origin.spec, origin.tokenizer, served.states
    concrete = {n: fn.get_concrete_function() for n, fn in served.functions.items()}
    tf.saved_model.save(served.module, tmp, signatures=concrete)
    prompts = example_prompts(served.automaton, spec.input.vocab_size)
    requests = {
        n: _warmup_inputs(tf, n, states, spec, tokenizer, prompts) for n in served.signatures
    }
    _write_warmup(tf, os.path.join(tmp, WARMUP_FILE), name, requests)
    difference, info = _verify(
        tf,
        tmp,
        served.trained,
        spec,
        requests,
        where,
        allowed_ids(spec, tokenizer),
        served.automaton,
        prompts,
        origin.record_start,
    )
    metadata = {
        "name": name,
        "version": version,
        "step": step,
        "signatures": info,
        "tokenizer": None if tokenizer is None else tokenizer.kind,
        "eor_id": EOR_ID,
        "start_tokens": origin.record_start,
        "pad_id": PAD_ID,
        "states": [dataclasses.asdict(st) for st in states],
        "max_logit_difference": difference,
        "record_shape": origin.record_shape,
        "run": origin.provenance,
        "automaton": (
            None
            if served.automaton is None
            else {
                "states": served.automaton.states,
                "sha256": served.automaton.digest,
                "resampled": list(served.automaton.resampled),
            }
        ),
    }
    meta_dir = os.path.join(tmp, METADATA_DIR)
    os.makedirs(meta_dir, exist_ok=True)
    with open(os.path.join(meta_dir, "spec.resolved.yaml"), "w", encoding="utf-8") as f:
        f.write(dump_yaml(to_data(spec)))
    with open(os.path.join(meta_dir, METADATA_FILE), "w", encoding="utf-8") as f:
        f.write(json.dumps(metadata, indent=2) + "\n")
    if origin.validators is not None:
        with open(os.path.join(meta_dir, VALIDATORS_FILE), "wb") as f:
            f.write(validators_json(origin.validators))
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
        raise _error(
            "export_corrupt",
            f"expected the export's digests, received a file that "
            f"does not read ({e}); export the run again",
            path,
        ) from None
    found = digest_mismatch(version_dir, digests)
    if found is None:
        return
    full, missing = found
    if missing:
        raise _error(
            "export_corrupt",
            "expected the export's file, received no such "
            "file: the version is incomplete; export the run again",
            full,
        )
    raise _error(
        "export_corrupt",
        "expected the file as it was exported, received "
        "different content (truncated or edited); export the run again",
        full,
    )
