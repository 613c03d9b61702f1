"""Run a SavedModel's signatures through TensorFlow's C API (tests/capi/run_signature.c),
as a C++ server such as TF Serving loads them, and compare with the Python answers."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from compiler.tf import tensorflow

from conftest import ROOT


@functools.cache
def capi_binary():
    """The C client, built once per process against the installed TensorFlow's libraries."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the C API client")
    tf_dir = os.path.dirname(importlib.util.find_spec("tensorflow").origin)
    binary = os.path.join(tempfile.mkdtemp(prefix="keraspec-capi-"), "run_signature")
    command = [
        "gcc",
        str(ROOT / "tests" / "capi" / "run_signature.c"),
        f"-I{tf_dir}/include",
        f"-L{tf_dir}",
        "-l:libtensorflow_cc.so.2",
        "-l:libtensorflow_framework.so.2",
        f"-Wl,-rpath,{tf_dir}",
        "-o",
        binary,
    ]
    # The gold linker reads TensorFlow's large libraries in 2 s where the default takes 10.
    gold = subprocess.run(command + ["-fuse-ld=gold"], capture_output=True)
    if gold.returncode != 0:
        subprocess.run(command, check=True)
    return binary


def _c_value(value):
    if isinstance(value, bytes):
        return "x" + value.hex()
    return repr(value.item())


def assert_c_api_answers_as_python(path, requests):
    """Every signature in `requests` ({name: {input: array}}), run by the C client on the
    SavedModel at `path` (one process, one load, every request), answers what
    TensorFlow's Python loader answers."""
    from tensorflow.core.protobuf import saved_model_pb2

    tf = tensorflow()
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    signatures = saved.meta_graphs[0].signature_def
    loaded = tf.saved_model.load(path)
    assert set(requests) == set(loaded.signatures), "every signature is covered"
    dtypes = {
        np.dtype(np.int32): "int32",
        np.dtype(np.int64): "int64",
        np.dtype(np.float32): "float",
        np.dtype(object): "string",
    }
    lines, order = [], []
    for name, inputs in requests.items():
        sig = signatures[name]
        for key, value in inputs.items():
            value = np.asarray(value)
            values = " ".join(_c_value(v) for v in value.reshape(-1))
            dims = " ".join(str(d) for d in value.shape)
            lines.append(
                f"in {sig.inputs[key].name} {dtypes[value.dtype]} {value.ndim} " f"{dims} {values}"
            )
        keys = sorted(sig.outputs)
        lines += [f"out {sig.outputs[k].name}" for k in keys] + ["run"]
        order.append((name, keys))
    run = subprocess.run(
        [capi_binary(), path],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    blocks = run.stdout.split("end\n")
    assert len(blocks) == len(order) + 1 and not blocks[-1].strip(), run.stdout[-500:]
    for (name, keys), block in zip(order, blocks):
        results = [line.split(" ") for line in block.splitlines() if line.startswith("out")]
        expected = loaded.signatures[name](**{k: tf.constant(v) for k, v in requests[name].items()})
        assert len(results) == len(keys)
        for key, fields in zip(keys, results):
            dtype, rank = fields[2], int(fields[3])
            shape = [int(d) for d in fields[4 : 4 + rank]]
            raw = fields[4 + rank :]
            want = expected[key].numpy()
            assert list(want.shape) == shape, (name, key)
            if dtype == "string":
                got = [bytes.fromhex(v[1:]) for v in raw]
                assert got == list(want.reshape(-1)), (name, key)
            else:
                got = np.array([float(v) for v in raw]).reshape(shape)
                np.testing.assert_allclose(
                    got, want.astype(np.float64), rtol=1e-5, atol=1e-6, err_msg=f"{name}.{key}"
                )
