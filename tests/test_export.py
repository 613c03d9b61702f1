"""Export: SavedModels that load, answer statelessly, generate in-graph, and load in C."""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import compiler
from compiler.build import compile_spec
from compiler.cli import app
from compiler.data.tokenizer import EOR_ID, load_tokenizer
from compiler.export.savedmodel import _verify, export_saved_model, read_metadata
from compiler.tf import tensorflow
from compiler.training.rundir import RunDir
from compiler.training.weights import load_weights, reshaped_spec

from capi_client import assert_c_api_answers_as_python
from conftest import ROOT, copy_fruit_run
from training_fixtures import load

tf = tensorflow()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fruit_run):
    """A tiny char model trained to convergence (the session's fruit run), and its first
    export."""
    root = tmp_path_factory.mktemp("export")
    copy_fruit_run(fruit_run, root)
    spec = load(root / "s.yaml")
    report = export_saved_model(root / "run", root / "models")
    return root, spec, report


def _keras_model(run_dir, spec):
    model = compile_spec(reshaped_spec(spec, batch_size=None, stateful=False)).model
    load_weights(model, RunDir(str(run_dir)).trained_checkpoint().prefix)
    return model


def _rows(rows, max_new_tokens, temperature, seed):
    """Per-row generation inputs: each row its budget, temperature and seed."""
    return dict(
        max_new_tokens=tf.fill([rows], max_new_tokens),
        temperature=tf.fill([rows], float(temperature)),
        seed=tf.range(rows, dtype=tf.int64) + seed,
    )


def _tokens(rows=3, length=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(2, 20, size=(rows, length)).astype(np.int32)


def test_layout_models_config_and_metadata(trained):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    root, spec, report = trained
    assert report.path == str(root / "models" / "tiny" / "1") and report.version == 1
    names = set(os.listdir(report.path))
    assert {"saved_model.pb", "variables", "assets", "assets.extra"} <= names
    assert set(os.listdir(os.path.join(report.path, "assets"))) == {"tokenizer.json"}
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((root / "models" / "models.config").read_text(), config)
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "tiny",
        "/models/tiny",
        "tensorflow",
    )
    assert set(report.signatures) == {"serving_default", "step", "generate", "generate_text"}
    assert report.signatures["serving_default"]["inputs"] == {"tokens": ["int32", [None, None]]}
    assert report.signatures["serving_default"]["outputs"]["logits"] == [
        "float32",
        [None, None, 40],
    ]
    assert report.max_logit_difference <= 1e-4
    assert not [n for n in os.listdir(root / "models" / "tiny") if n.startswith(".")]


def test_served_logits_equal_the_trained_keras_model(trained):
    root, spec, report = trained
    loaded = tf.saved_model.load(report.path)
    tokens = _tokens()
    served = loaded.signatures["serving_default"](tokens=tf.constant(tokens))
    expected = _keras_model(root / "run", spec)(tokens, training=False).numpy()
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-5)
    probs = served["next_token_probs"].numpy()
    np.testing.assert_allclose(probs, tf.nn.softmax(expected[:, -1]).numpy(), atol=1e-6)


def test_the_same_request_gives_the_same_answer_whatever_came_before(trained):
    _, _, report = trained
    serve = tf.saved_model.load(report.path).signatures["serving_default"]
    first = serve(tokens=tf.constant(_tokens(seed=1)))["logits"].numpy()
    serve(tokens=tf.constant(_tokens(rows=5, length=4, seed=2)))  # another client's request
    again = serve(tokens=tf.constant(_tokens(seed=1)))["logits"].numpy()
    np.testing.assert_array_equal(first, again)


def test_concurrent_requests_answer_as_they_do_one_at_a_time(trained):
    _, _, report = trained
    loaded = tf.saved_model.load(report.path)
    serve, generate = loaded.signatures["serving_default"], loaded.signatures["generate"]
    inputs = [_tokens(rows=2, length=3 + i, seed=i) for i in range(8)]

    def ask(i):
        logits = serve(tokens=tf.constant(inputs[i]))["logits"].numpy()
        tokens = generate(prompt=tf.constant(inputs[i][:, :2]), **_rows(2, 6, 1.0, i))
        return logits, tokens["tokens"].numpy()

    alone = [ask(i) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(ask, range(8)))
    for (l1, t1), (l2, t2) in zip(alone, together):
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(t1, t2)


def test_step_carries_state_like_a_whole_sequence(trained):
    _, _, report = trained
    loaded = tf.saved_model.load(report.path)
    tokens = _tokens(rows=2, length=6)
    whole = loaded.signatures["serving_default"](tokens=tf.constant(tokens))["logits"].numpy()
    states = {
        name: tf.zeros([2, shape[1]])
        for name, (_, shape) in report.signatures["step"]["inputs"].items()
        if name != "tokens"
    }
    assert sorted(states) == ["lstm_1_c", "lstm_1_h", "lstm_c", "lstm_h"]
    step = loaded.signatures["step"]
    for t in range(6):
        out = step(tokens=tf.constant(tokens[:, t : t + 1]), **states)
        np.testing.assert_allclose(out["logits"].numpy()[:, 0], whole[:, t], atol=1e-5)
        states = {name: out[name] for name in states}


def test_generate_is_greedy_at_temperature_zero_and_stops_at_end_of_record(trained):
    _, _, report = trained
    loaded = tf.saved_model.load(report.path)
    serve, generate = loaded.signatures["serving_default"], loaded.signatures["generate"]
    automaton = _automaton(trained)
    # The first row's prompt starts no valid record (its row is not constrained); the
    # second's is one token that starts one.
    good = next(i for i in range(2, 40) if automaton.table[automaton.start, i] >= 0)
    prompts = [[5, 6], [good]]
    assert automaton.walk(prompts[0]) is None
    prompt = np.array([[5, 6], [good, 0]], np.int32)
    out = generate(prompt=tf.constant(prompt), **_rows(2, 12, 0.0, 0))
    tokens, lengths, complete = (out[k].numpy() for k in ("tokens", "lengths", "complete"))
    start = read_metadata(report.path)["start_tokens"]
    assert start == [EOR_ID]  # an aligned model's start of a record (start_tokens)
    held = out["constrained"].numpy()
    assert held.tolist() == [False, True]
    used = load_tokenizer(str(trained[0] / "run")).size
    masked_mass = out["masked_mass"].numpy()
    for row, given in enumerate(prompts):
        assert held[row] == (automaton.walk(given) is not None)
        ids = start + given
        expected = []
        kept = 1.0  # the probability the mask kept along the path, step by step
        for _ in range(12):  # the same greedy loop, one whole-sequence request per token
            logits = serve(tokens=tf.constant([ids + expected]))["logits"].numpy()[0, -1]
            logits[0] = -np.inf  # never padding
            logits[used:] = -np.inf  # nor an id the tokenizer does not have
            if held[row]:  # masked as the automaton masks
                rule = automaton.table[automaton.walk(given + expected)] >= 0
                p = np.exp(logits - logits.max())
                kept *= p[rule].sum() / p.sum()
                logits[~rule] = -np.inf
            nxt = int(np.argmax(logits))
            if nxt == EOR_ID:
                break
            expected.append(nxt)
        assert tokens[row, : lengths[row]].tolist() == expected
        assert (tokens[row, lengths[row] :] == 0).all()
        assert complete[row] == (len(expected) < 12)
        assert masked_mass[row] == pytest.approx(1.0 - kept if held[row] else 0.0, abs=1e-4)


def _automaton(trained):
    from compiler.data.automaton import compile_automaton
    from compiler.data.columns import load_validators

    root = trained[0]
    tokenizer = load_tokenizer(str(root / "run"))
    return compile_automaton(load_validators(str(root / "run")), tokenizer, 40)


def test_generate_is_deterministic_for_a_seed(trained):
    _, _, report = trained
    generate = tf.saved_model.load(report.path).signatures["generate"]

    def run(seed):
        out = generate(prompt=tf.zeros([6, 0], tf.int32), **_rows(6, 15, 1.0, seed))
        return out["tokens"].numpy()

    assert (run(3) == run(3)).all()
    assert (run(3) != run(4)).any()


def test_generate_text_matches_generate_on_token_ids(trained):
    root, _, report = trained
    loaded = tf.saved_model.load(report.path)
    tokenizer = load_tokenizer(str(root / "run"))
    args = _rows(2, 20, 0.7, 9)
    text = loaded.signatures["generate_text"](prompt=tf.constant(["pe", "pe"]), **args)
    ids = loaded.signatures["generate"](
        prompt=tf.constant(np.tile(tokenizer.encode("pe"), (2, 1))), **args
    )
    decoded = [
        "pe" + tokenizer.decode(row[:n])
        for row, n in zip(ids["tokens"].numpy(), ids["lengths"].numpy())
    ]
    assert [t.decode() for t in text["text"].numpy()] == decoded
    with pytest.raises(tf.errors.InvalidArgumentError, match="vocabulary"):
        loaded.signatures["generate_text"](prompt=tf.constant(["Z"]), **_rows(1, 20, 0.7, 9))


def test_warmup_requests_parse_and_run(trained):
    from tensorflow_serving.apis import prediction_log_pb2

    _, _, report = trained
    loaded = tf.saved_model.load(report.path)
    path = os.path.join(report.path, "assets.extra", "tf_serving_warmup_requests")
    seen = []
    for raw in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "tiny"
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert outputs
        seen.append(request.model_spec.signature_name)
    assert sorted(seen) == sorted(report.signatures)


def test_versions_increment_and_are_never_overwritten(trained):
    root, _, first = trained
    base = root / "models"
    second = export_saved_model(root / "run", base)
    assert (first.version, second.version) == (1, 2)
    before = sorted(os.listdir(base / "tiny"))
    mtime = os.path.getmtime(base / "tiny" / "1" / "saved_model.pb")
    result = CliRunner().invoke(
        app, ["export", str(root / "run"), "-o", str(base), "--version", "1"]
    )
    assert result.exit_code == 1 and "never overwritten" in result.output
    assert sorted(os.listdir(base / "tiny")) == before
    assert os.path.getmtime(base / "tiny" / "1" / "saved_model.pb") == mtime
    # Still one entry in models.config: TF Serving serves the highest version of the model.
    assert (base / "models.config").read_text().count("name:") == 1


def test_export_refuses_weights_that_differ_from_the_saved_model(trained):
    root, spec, report = trained
    other = compile_spec(reshaped_spec(spec, batch_size=None, stateful=False)).model  # untrained
    requests = {}
    with pytest.raises(compiler.ExportError) as e:
        _verify(tf, report.path, other, spec, requests, "x")
    assert e.value.diagnostics[0].code == "verification"


def test_a_killed_export_leaves_no_version(trained, tmp_path):
    root, _, _ = trained
    base = tmp_path / "models"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "export", str(root / "run"), "-o", str(base)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            model_dir = base / "tiny"
            if model_dir.is_dir() and any(n.startswith(".tmp-") for n in os.listdir(model_dir)):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the export never started writing")
        time.sleep(0.5)  # mid-way through writing the SavedModel
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not [n for n in os.listdir(base / "tiny") if n.isdigit()]
    assert not (base / "models.config").exists()


def test_every_signature_runs_through_the_c_api(trained):
    _, _, report = trained
    rng = np.random.default_rng(0)
    requests = {
        "serving_default": {"tokens": _tokens(2, 5)},
        "step": {
            "tokens": _tokens(2, 3),
            **{
                n: rng.normal(size=(2, 16)).astype(np.float32)
                for n in ("lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c")
            },
        },
        "generate": {  # the second row constrained by the automaton, the first not
            "prompt": np.array([[5, 6], [0, 0]], np.int32),
            "max_new_tokens": np.array([8, 5], np.int32),
            "temperature": np.array([0.8, 0.0], np.float32),
            "seed": np.array([4, 5], np.int64),
        },
        "generate_text": {
            "prompt": np.array([b"pe", b""], object),
            "max_new_tokens": np.array([8, 5], np.int32),
            "temperature": np.array([0.8, 0.0], np.float32),
            "seed": np.array([4, 5], np.int64),
        },
    }
    assert_c_api_answers_as_python(report.path, requests)


def test_cli_export_inspect_and_generate(trained, tmp_path):
    root, _, _ = trained
    runner = CliRunner()
    base = root / "models"
    latest = max(int(n) for n in os.listdir(base / "tiny") if n.isdigit())
    result = runner.invoke(app, ["export", str(root / "run"), "-o", str(base), "--format", "json"])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["version"] == latest + 1 and exported["checkpoint"] == "best"
    best = RunDir(str(root / "run")).pointer("best").step
    assert exported["step"] == best
    text = runner.invoke(
        app, ["export", str(root / "run"), "-o", str(base), "--checkpoint", "latest"]
    )
    assert text.exit_code == 0, text.output
    latest_step = RunDir(str(root / "run")).pointer("latest").step
    assert f"from the run's latest checkpoint, step {latest_step}" in text.output
    latest += 1
    result = runner.invoke(app, ["inspect", str(base / "tiny"), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["version"] == latest + 1 and info["step"] > 0
    assert info["signatures"]["generate"]["inputs"]["seed"] == ["int64", [None]]
    assert "template: lstm-text" not in info["spec"] and "apiVersion: keraspec/v1" in info["spec"]
    result = runner.invoke(
        app,
        [
            "generate",
            str(base / "tiny"),
            "-n",
            "4",
            "--seed",
            "2",
            "--prompt",
            "p",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["records"]) == 4 and all(r.startswith("p") for r in payload["records"])
    assert payload["valid"] is not None and 0 <= payload["valid_share"] <= 1
    assert payload["source"] == str(base / "tiny" / str(latest + 1))
    bad = runner.invoke(app, ["inspect", str(tmp_path)])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "saved_model.pb" in bad.output
    # The resolved spec is behind --spec.
    plain = runner.invoke(app, ["inspect", str(base / "tiny")])
    assert plain.exit_code == 0 and "apiVersion: keraspec/v1" not in plain.output
    full = runner.invoke(app, ["inspect", str(base / "tiny"), "--spec"])
    assert full.exit_code == 0 and "apiVersion: keraspec/v1" in full.output


def test_inspect_a_run_directory(trained):
    root, _, _ = trained
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(root / "run"), "--format", "json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    latest = RunDir(str(root / "run")).pointer("latest")
    assert run["name"] == "tiny" and run["checkpoints"]["latest"]["step"] == latest.step
    assert run["checkpoints"]["best"]["step"] == RunDir(str(root / "run")).pointer("best").step
    assert run["data_sha256"] == json.loads((root / "run" / "run.json").read_text())["data_sha256"]
    assert run["report"]["stopped_by"] == "epochs" and run["validators"] == "learned"
    assert "loss" in run["checkpoints"]["latest"]["metrics"]
    text = runner.invoke(app, ["inspect", str(root / "run"), "--spec"])
    assert text.exit_code == 0 and f"step {latest.step}" in text.output
    assert "latest checkpoint" in text.output and "apiVersion: keraspec/v1" in text.output


def test_export_weights_trained_elsewhere(trained, tmp_path):
    root, spec, _ = trained
    keras = _keras_model(root / "run", spec)
    keras.save_weights(str(tmp_path / "weights.h5"))
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(root / "s.yaml"),
            "--weights",
            str(tmp_path / "weights.h5"),
            "--tokenizer",
            str(root / "run"),
            "-o",
            str(tmp_path / "models"),
            "--name",
            "other",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["path"] == str(tmp_path / "models" / "other" / "1") and report["step"] is None
    assert "generate_text" in report["signatures"]
    tokens = _tokens()
    served = (
        tf.saved_model.load(report["path"])
        .signatures["serving_default"](tokens=tf.constant(tokens))["logits"]
        .numpy()
    )
    np.testing.assert_allclose(served, keras(tokens, training=False).numpy(), atol=1e-5)
    missing = CliRunner().invoke(
        app,
        [
            "export",
            str(root / "s.yaml"),
            "--weights",
            str(tmp_path / "nope.h5"),
            "-o",
            str(tmp_path / "models"),
        ],
    )
    assert missing.exit_code == 1 and "nope.h5" in missing.output
    assert "Traceback" not in missing.output


def test_abusive_requests_fail_at_once_naming_the_limit(trained):
    _, _, report = trained
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tests", "abusive_requests.py"),
            report.path,
            str(6 << 30),
        ],  # 6 GiB of address space: TensorFlow itself needs about 4
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    expected = {
        "max_new_tokens_2^31-1": "export.limits.max_new_tokens = 1024, received",
        "max_new_tokens_2^27_greedy": "export.limits.max_new_tokens = 1024",
        "temperature_inf": "temperature: expected finite values >= 0",
        "temperature_nan": "temperature: expected finite values >= 0",
        "temperature_negative": "temperature: expected finite values >= 0",
        "negative_budget": "max_new_tokens: expected values >= 0",
        "rows_over_max_batch": "export.limits.max_batch = 256, received",
        "per_row_mismatch": "max_new_tokens: expected one value per prompt row",
        "prompt_too_long": "export.limits.max_prompt_length = 1024, received",
        "text_many_rows": "export.limits.max_batch = 256, received",
        "text_long_prompt": "export.limits.max_prompt_chars = 4096, received",
        "step_batch_mismatch": "expected as many rows as tokens",
        "serving_too_long": "export.limits.max_prompt_length = 1024",
    }
    assert set(results) == set(expected)
    for name, fragment in expected.items():
        seconds, message = results[name]
        assert message.startswith("InvalidArgument") and fragment in message, (name, message)
        # Served, any of these would run for hours; refused, each returns in well under a
        # second (15 s leaves room for a loaded machine).
        assert seconds < 15.0, (name, seconds)


def test_no_temperature_samples_a_masked_id(trained):
    root, _, report = trained
    generate = tf.saved_model.load(report.path).signatures["generate"]
    used = load_tokenizer(str(root / "run")).size  # ids the tokenizer knows (model has 40)
    for temperature in (1e30, 3.4e38, 1e4):
        out = generate(prompt=tf.zeros([64, 0], tf.int32), **_rows(64, 30, temperature, 7))
        tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
        produced = np.concatenate([row[:n] for row, n in zip(tokens, lengths)])
        assert produced.size > 500
        assert produced.min() >= 2 and produced.max() < used, temperature
        # At such temperatures every allowed id is about equally likely: most appear.
        assert len(set(produced.tolist())) > 0.8 * (used - 2)


def test_constrained_generate_never_samples_what_the_rules_mask(trained):
    from compiler.data.automaton import compile_automaton
    from compiler.data.columns import load_validators

    root, _, report = trained
    loaded = tf.saved_model.load(report.path)
    validators = load_validators(str(root / "run"))
    tokenizer = load_tokenizer(str(root / "run"))
    automaton = compile_automaton(validators, tokenizer, 40)
    # The automaton is data in the export, with its digest.
    assert read_metadata(report.path)["automaton"]["sha256"] == automaton.digest
    for temperature in (0.0, 0.5, 1.0, 10.0, 1e4, 3.4e38):
        out = loaded.signatures["generate"](
            prompt=tf.zeros([64, 0], tf.int32), **_rows(64, 30, temperature, 11)
        )
        tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
        assert out["constrained"].numpy().all()
        masked = out["masked_mass"].numpy()
        assert ((masked >= 0) & (masked <= 1)).all()
        for row, n, complete in zip(tokens, lengths, out["complete"].numpy()):
            assert automaton.walk(row[:n]) is not None, (temperature, row[:n])
            if complete:
                assert validators.is_valid(tokenizer.decode(row[:n])), temperature
        if temperature >= 1e4:  # all allowed ids equally likely: the mask removes most mass
            assert masked.mean() > 0.5
    # A prompt no valid record starts with leaves its row alone, not the batch.
    bad = next(i for i in range(2, tokenizer.size) if automaton.table[automaton.start, i] < 0)
    out = loaded.signatures["generate"](
        prompt=tf.constant([[0], [bad]], tf.int32), **_rows(2, 5, 1.0, 3)
    )
    assert out["constrained"].numpy().tolist() == [True, False]


def test_a_row_answers_the_same_alone_and_batched_with_others(trained):
    _, _, report = trained
    generate = tf.saved_model.load(report.path).signatures["generate"]
    alone = generate(
        prompt=tf.constant([[5, 6, 7]], tf.int32),
        max_new_tokens=tf.constant([12]),
        temperature=tf.constant([0.9]),
        seed=tf.constant([42], tf.int64),
    )
    rng = np.random.default_rng(3)
    prompts = np.zeros((8, 5), np.int32)
    for i in range(8):  # other prompts, of other lengths, right-padded with 0
        n = int(rng.integers(0, 6))
        prompts[i, :n] = rng.integers(2, 20, n)
    prompts[5] = [5, 6, 7, 0, 0]
    budgets = rng.integers(1, 30, 8).astype(np.int32)
    budgets[5] = 12
    temperatures = rng.uniform(0, 2, 8).astype(np.float32)
    temperatures[5] = 0.9
    seeds = rng.integers(0, 1000, 8)
    seeds[5] = 42
    batched = generate(
        prompt=tf.constant(prompts),
        max_new_tokens=tf.constant(budgets),
        temperature=tf.constant(temperatures),
        seed=tf.constant(seeds),
    )
    n = int(alone["lengths"][0])
    assert int(batched["lengths"][5]) == n
    assert batched["tokens"].numpy()[5, :n].tolist() == alone["tokens"].numpy()[0, :n].tolist()
    assert bool(batched["complete"][5]) == bool(alone["complete"][0])
    assert (batched["lengths"].numpy() <= budgets).all()


def test_batching_parameters_parse_as_tf_servings_message(trained, tmp_path):
    from google.protobuf import text_format

    from compiler.export.batching import batching_parameters_class

    root, spec, report = trained
    cls = batching_parameters_class()
    # The message as tensorflow_serving/servables/tensorflow/session_bundle_config.proto
    # publishes it: field numbers and the wrapper types the server parses.
    fields = {
        f.name: (f.number, f.message_type.full_name if f.message_type else f.type)
        for f in cls.DESCRIPTOR.fields
    }
    assert cls.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert fields["max_batch_size"] == (1, "google.protobuf.Int64Value")
    assert fields["batch_timeout_micros"] == (2, "google.protobuf.Int64Value")
    assert fields["num_batch_threads"] == (4, "google.protobuf.Int64Value")
    assert fields["pad_variable_length_inputs"][0] == 7
    parsed = text_format.Parse(open(report.batching_parameters).read(), cls())
    assert report.batching_parameters == str(root / "models" / "batching_parameters.txt")
    assert parsed.max_batch_size.value == spec.export.limits.max_batch == 256
    assert parsed.num_batch_threads.value >= 1 and parsed.pad_variable_length_inputs
    # A second model with a smaller row limit in the same BASE: the file keeps the smaller.
    base = tmp_path / "models"
    shutil.copytree(root / "models", base)
    small = compiler.load_spec(root / "s.yaml", ["export.limits.max_batch=16"])
    keras = _keras_model(root / "run", spec)
    keras.save_weights(str(tmp_path / "w.h5"))
    export_saved_model(small, base, weights=str(tmp_path / "w.h5"), name="small")
    again = text_format.Parse((base / "batching_parameters.txt").read_text(), cls())
    assert again.max_batch_size.value == 16


def test_generate_cli_checks_the_exports_limits_before_sending(trained):
    root, _, _ = trained
    runner = CliRunner()
    # More rows than one request may hold: the client sends two requests (256 + 44).
    many = runner.invoke(
        app,
        [
            "generate",
            str(root / "models" / "tiny"),
            "-n",
            "300",
            "--max-new-tokens",
            "3",
            "--seed",
            "1",
            "--unconstrained",  # 3 tokens end no record: constrained, all would resample
        ],
    )
    assert many.exit_code == 0 and len(many.stdout.splitlines()) == 300
    long = runner.invoke(
        app, ["generate", str(root / "models" / "tiny"), "--max-new-tokens", "5000"]
    )
    assert long.exit_code == 1
    assert "--max-new-tokens: expected at most export.limits.max_new_tokens = 1024" in long.output
    hot = runner.invoke(app, ["generate", str(root / "models" / "tiny"), "--temperature", "inf"])
    assert hot.exit_code == 2 and "finite" in hot.output


def test_generate_says_what_a_wrong_path_is_and_suggests_an_export(trained, tmp_path):
    root, _, _ = trained
    runner = CliRunner()
    missing = runner.invoke(app, ["generate", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "a path that does not exist" in missing.output
    base = runner.invoke(app, ["generate", str(root / "models")])
    assert base.exit_code == 1 and "Traceback" not in base.output
    assert f"name one of them, e.g. {root / 'models' / 'tiny'}" in base.output
    assert "models.config lists them" in base.output


def test_an_export_carries_the_run_validators_and_generates_valid_only(trained):
    from compiler.data.columns import load_validators
    from compiler.evaluate import evaluate

    root, _, report = trained
    saved = load_validators(os.path.join(report.path, "assets.extra", "keraspec"))
    assert saved is not None and saved == load_validators(str(root / "run"))
    # A prompt, as a user fixing one field would give: this 6-epoch model still starts many
    # records mid-word (measured: 2-4% valid without a prompt, 71% with this one).
    result = compiler.generate(
        report.path, count=10, seed=1, valid_only=True, temperature=0.5, prompt="apple,"
    )
    assert len(result.records) == 10 and all(map(saved.is_valid, result.records))
    assert all(r.startswith("apple,") for r in result.records)
    assert result.sampled >= 10 and result.source == report.path
    # Evaluating the export finds its run's held-out records through the export's metadata.
    evaluated = evaluate(report.path, root / "corpus.txt", count=100)
    assert evaluated.baseline is not None and evaluated.step == report.step


def test_a_savedmodel_not_written_by_keraspec_is_inspected_but_not_sampled(tmp_path):
    module = tf.Module()
    module.double = tf.function(
        lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32, name="x")]
    )
    plain = tmp_path / "base" / "plain"
    tf.saved_model.save(module, str(plain / "1"), signatures={"serving_default": module.double})
    shown = CliRunner().invoke(app, ["inspect", str(plain), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert (info["name"], info["version"], info["spec"], info["step"]) == ("plain", 1, None, None)
    assert info["signatures"]["serving_default"]["inputs"] == {"x": ["float32", [None]]}
    with pytest.raises(compiler.RunError) as e:
        compiler.generate(plain, count=1)
    assert [d.code for d in e.value.diagnostics] == ["not_a_keraspec_export"]
    assert e.value.diagnostics[0].file == str(plain / "1")
