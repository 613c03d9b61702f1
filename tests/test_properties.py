"""Property-based tests: generated specs validate, round-trip and compile; mutated specs
always give located diagnostics, never another exception."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler.lang.render import dump_yaml, render, to_data

from conftest import TF_PRIVACY

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chain_specs(draw):
    """A valid chain spec: embedding, a few middle layers, dense logits."""
    vocab = draw(st.integers(2, 48))
    width = draw(st.integers(1, 12))
    layers = [{"type": "embedding", "output_dim": width}]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(
            st.sampled_from(
                ["dropout", "lstm", "gru", "dense", "layer_normalization", "activation"]
            )
        )
        if kind == "dropout":
            layers.append({"type": kind, "rate": draw(st.floats(0, 0.9))})
        elif kind in ("lstm", "gru"):
            width = draw(st.integers(1, 12))
            layers.append({"type": kind, "units": width, "return_sequences": True})
        elif kind == "dense":
            width = draw(st.integers(1, 12))
            layers.append(
                {
                    "type": kind,
                    "units": width,
                    "activation": draw(st.sampled_from(["relu", "tanh", "linear"])),
                }
            )
        elif kind == "layer_normalization":
            layers.append({"type": kind})
        else:
            layers.append({"type": kind, "activation": draw(st.sampled_from(["relu", "gelu"]))})
    layers.append({"type": "dense", "units": vocab})
    batch = draw(st.sampled_from([2, 4, 6]))
    training = {
        "epochs": draw(st.integers(1, 5)),
        "batch_size": batch,
        "sequence_length": draw(st.integers(2, 8)),
        "optimizer": {"type": draw(st.sampled_from(["rmsprop", "adam", "sgd", "adagrad"]))},
        "validation_split": draw(st.sampled_from([0.0, 0.1])),
    }
    if draw(st.booleans()):
        # tensorflow-privacy's implementations exist on Python 3.11 only.
        implementations = ["standard", "vectorized", "fast"] if TF_PRIVACY else ["fast"]
        implementation = draw(st.sampled_from(implementations))
        micro = batch if implementation == "fast" else draw(st.sampled_from([1, batch]))
        training["privacy"] = {
            "l2_norm_clip": draw(st.floats(0.1, 5)),
            "noise_multiplier": draw(st.floats(0, 2)),
            "num_microbatches": micro,
            "implementation": implementation,
        }
    return {
        "apiVersion": "keraspec/v1",
        "name": "generated",
        "input": {"vocab_size": vocab},
        "model": {"layers": layers},
        "training": training,
    }


@settings(max_examples=60, **SETTINGS)
@given(chain_specs())
def test_generated_specs_validate_and_render_round_trips(data):
    result = compiler.validate(dump_yaml(data), name="<generated>")
    assert result.ok, [d.format() for d in result.diagnostics]
    text = render(result.spec)
    again = compiler.load_spec(text + "\n", name="<rendered>")
    assert again == result.spec
    assert render(again) == text


@settings(max_examples=4, **SETTINGS)
@given(chain_specs())
def test_generated_specs_compile_with_the_static_parameter_count(data):
    spec = compiler.load_spec(dump_yaml(data), name="<generated>")
    compiled = compiler.compile_spec(spec)
    assert compiled.model.count_params() == compiled.analysis.total_params


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _at(node, path):
    for part in path:
        node = node[part]
    return node


MUTANTS = st.sampled_from(
    ["delete", "string", "list", "mapping", "huge", "negative", "misspell", "nest", "null", "float"]
)


@settings(max_examples=150, **SETTINGS)
@given(chain_specs(), MUTANTS, st.integers(0, 10_000))
def test_mutated_specs_give_located_diagnostics_never_crashes(data, mutation, pick):
    data = copy.deepcopy(data)
    paths = [p for p in _paths(data) if p]
    path = paths[pick % len(paths)]
    parent, key = _at(data, path[:-1]), path[-1]
    if mutation == "delete":
        del parent[key]
    elif mutation == "misspell" and isinstance(key, str):
        parent[key[:-1] + "x"] = parent.pop(key)
    else:
        parent[key] = {
            "string": "surprise",
            "list": [1, "a"],
            "mapping": {"a": {"b": 1}},
            "huge": 10**40,
            "negative": -7,
            "null": None,
            "float": 2.5,
            "nest": [[[[[[[[1]]]]]]]],
            "misspell": "x",
        }[mutation]
    text = dump_yaml(data)
    result = compiler.validate(text, name="<mutant>")  # never raises
    for d in result.diagnostics:
        assert d.file == "<mutant>" and d.line is not None and d.line >= 1
        assert "expected" in d.message or "received" in d.message
    if not result.ok:
        assert all(d.code != "internal" for d in result.diagnostics)


@settings(max_examples=40, **SETTINGS)
@given(chain_specs(), st.integers(1, 40))
def test_aliases_and_anchors_load_as_plain_data(data, repeat):
    text = dump_yaml(data) + "extra: &x [1, 2]\n" + "more: [" + ", ".join(["*x"] * repeat) + "]\n"
    result = compiler.validate(text, name="<aliased>")
    assert not result.ok
    codes = {d.code for d in result.diagnostics}
    assert codes == {"unknown_key"}  # extra and more: unknown keys, located, nothing else
    assert all(d.line is not None for d in result.diagnostics)
    assert to_data(compiler.load_spec(dump_yaml(data), name="<plain>")) is not None
