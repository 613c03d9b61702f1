"""DP batch sampling: Poisson frequencies, secret keys, resume, and where the keys live."""

import json

import numpy as np
import pytest

from compiler.data.sampling import padded_shares, poisson_indices, secret_key, shuffled_order
from compiler.export.savedmodel import export_saved_model
from compiler.privacy import fast as fast_dp
from compiler.tf import tensorflow
from compiler.training import loop as training
from compiler.training import train
from compiler.training.rundir import RunDir

from training_fixtures import load, write_corpus, write_spec

tf = tensorflow()
KEY = np.array([0x1234_5678_9ABC_DEF0, -0x0FED_CBA9_8765_4321], dtype=np.int64)


def test_poisson_sampling_includes_each_record_with_probability_q():
    records, q, steps = 200, 0.05, 4000
    counts = np.zeros(records, int)
    sizes = []
    for step in range(steps):
        picked = poisson_indices(KEY, step, records, q)
        assert (np.diff(picked) > 0).all()  # distinct records, sorted
        counts[picked] += 1
        sizes.append(len(picked))
    # Each count is Binomial(4000, 0.05): mean 200, sd 13.8; seven sd is a margin a fixed key
    # never crosses by chance.
    assert np.abs(counts - steps * q).max() < 7 * np.sqrt(steps * q * (1 - q))
    assert abs(np.mean(sizes) - records * q) < 0.1 * records * q
    assert np.var(sizes) == pytest.approx(records * q * (1 - q), rel=0.2)  # not a fixed size
    assert min(sizes) < records * q < max(sizes)


def test_batches_depend_on_the_secret_key_and_the_step_only():
    assert (poisson_indices(KEY, 7, 1000, 0.05) == poisson_indices(KEY, 7, 1000, 0.05)).all()
    other = secret_key()
    assert not np.array_equal(other, secret_key())  # fresh entropy every time
    assert not np.array_equal(
        poisson_indices(other, 7, 1000, 0.05), poisson_indices(KEY, 7, 1000, 0.05)
    )
    assert not np.array_equal(
        poisson_indices(KEY, 8, 1000, 0.05), poisson_indices(KEY, 7, 1000, 0.05)
    )
    order = shuffled_order(KEY, 50, 0)
    assert sorted(order) == list(range(50))
    assert not np.array_equal(order, shuffled_order(KEY, 50, 1))


def test_a_batch_is_split_equally_among_replicas_with_masked_slots():
    shares = list(padded_shares(np.array([3, 5, 9, 11, 20]), 2))
    assert [list(p) for p, _ in shares] == [[3, 5, 9], [11, 20, -1]]
    assert [n for _, n in shares] == [3, 2]
    ((empty, real),) = padded_shares(np.array([], dtype=np.int64), 1)
    assert list(empty) == [-1] and real == 0  # an empty sample still takes a (noise) step


def _spec(tmp_path):
    # Without noise, runs of one spec and seed can differ only by their batches.
    return load(
        write_spec(
            tmp_path / "s.yaml", dp=True, epochs=1, noise=0.0, length=12, implementation="fast"
        )
    )


def _keys(run_dir):
    prefix = RunDir(str(run_dir)).pointer("latest").prefix
    names = [
        n
        for n, _ in tf.train.list_variables(prefix)
        if n.endswith("key/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n in names}


def test_runs_resume_their_batches_draw_new_keys_and_keep_them_secret(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.txt")
    spec = _spec(tmp_path)
    fresh = train(spec, corpus, tmp_path / "fresh", max_steps=4)
    # With every secret key fixed, a resumed run draws the batches of an uninterrupted one.
    monkeypatch.setattr(training, "secret_key", lambda: KEY.copy())
    monkeypatch.setattr(fast_dp, "secret_key", lambda: KEY.copy())
    straight = train(spec, corpus, tmp_path / "straight", max_steps=4)
    train(spec, corpus, tmp_path / "resumed", max_steps=2)
    resumed = train(spec, corpus, tmp_path / "resumed", max_steps=4)
    assert straight.steps == resumed.steps == 4
    assert straight.weights_sha256 == resumed.weights_sha256
    sampling = resumed.privacy["sampling"]
    expected = [len(poisson_indices(KEY, s, 216, 8 / 216)) for s in range(4)]
    assert sampling["method"] == "poisson" and sampling["truncation"] == "never"
    assert (sampling["min_batch"], sampling["max_batch"]) == (min(expected), max(expected))
    assert sampling["mean_batch"] == pytest.approx(np.mean(expected), abs=1e-3)
    assert resumed.privacy["randomness"]["seeded"] == [
        "weight initialisation",
        "dropout",
        "validation split",
    ]
    # A new run of the same spec and seed draws new keys, hence other batches.
    assert fresh.seed == straight.seed
    keys = _keys(tmp_path / "fresh")
    assert len(keys) == 2  # the sampling key and the noise key
    assert all(not np.array_equal(key, KEY) for key in keys.values())
    assert fresh.weights_sha256 != straight.weights_sha256
    # The keys are in the checkpoints and nowhere else: not in run.json, the report, the
    # spec, TensorBoard's logs, nor in the export.
    export_saved_model(tmp_path / "fresh", tmp_path / "models")
    forms = []
    for key in keys.values():
        forms += [
            key.tobytes(),
            key.tobytes().hex().encode(),
            json.dumps([int(v) for v in key]).encode(),
        ]
        forms += [str(int(v)).encode() for v in key]
    checkpoints = tmp_path / "fresh" / "checkpoints"
    files = [
        p for p in (tmp_path / "fresh").rglob("*") if p.is_file() and checkpoints not in p.parents
    ] + [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert {"run.json", "report.json", "saved_model.pb"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert not any(form in data for form in forms), path
    # ... while the checkpoint does hold them (the search would find them).
    held = b"".join(p.read_bytes() for p in checkpoints.rglob("*") if p.is_file())
    assert all(key.tobytes() in held for key in keys.values())
