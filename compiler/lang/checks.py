"""Semantic checks, without TensorFlow.

`check(spec, source)` fills the defaults that depend on other fields (layer names, the
embedding's input_dim, training batch and sequence sizes), then runs a static shape pass
through the layer graph: ranks and dims flow from layer to layer (each layer type's own
rule, `compiler.layers`), each layer's parameters are counted, and the cross-field rules
(`compiler.lang.rules`) are checked. Every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from compiler.diagnostics import Diagnostic
from compiler.lang.rules import Rules
from compiler.lang.source import Path, Source
from compiler.lang.spec import Spec
from compiler.layers import LayerBase
from compiler.layers.base import Shape, SubPath, fmt_shape

DEFAULT_BATCH_SIZE = 64
DEFAULT_SEQUENCE_LENGTH = 100


@dataclasses.dataclass
class LayerInfo:
    name: str
    type: str
    inputs: list[str]
    output_shape: Optional[Shape]
    params: int


@dataclasses.dataclass
class Analysis:
    """What the static pass learned about a valid graph.

    Attributes:
        layers: Per layer, in topological order: inputs, output shape, parameter count.
        output: Name of the output layer.
        sequential: True when the graph is a plain chain (compiles to Sequential).
        input_shape: (batch, time) of the token input, None where variable.
    """

    layers: list[LayerInfo]
    output: str
    sequential: bool
    input_shape: Shape

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)


class _Checker(Rules):
    """The graph pass (here) and the cross-field rules (`compiler.lang.rules`)."""

    def __init__(self, spec: Spec, source: Source):
        self.spec = spec
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: Path, code: str, message: str) -> None:
        self.diagnostics.append(self.source.diagnostic(path, code, message))

    def warn(self, path: Path, code: str, message: str) -> None:
        self.diagnostics.append(self.source.diagnostic(path, code, message, severity="warning"))

    # ------------------------------------------------------------------ resolution

    def resolve(self) -> Spec:
        spec = self.spec
        names = layer_names([(layer.type, layer.name) for layer in spec.model.layers])
        layers = []
        for layer, name in zip(spec.model.layers, names):
            update: dict[str, object] = {} if layer.name else {"name": name}
            layer = layer.with_defaults(spec.input)
            layers.append(layer.model_copy(update=update) if update else layer)
        output = spec.model.output or layers[-1].name
        training = spec.training
        t_update: dict[str, object] = {}
        if training.batch_size is None:
            t_update["batch_size"] = spec.input.batch_size or DEFAULT_BATCH_SIZE
        if training.sequence_length is None:
            t_update["sequence_length"] = spec.input.sequence_length or DEFAULT_SEQUENCE_LENGTH
        training = training.model_copy(update=t_update)
        privacy = training.privacy
        if privacy is not None:
            p_update: dict[str, object] = {}
            if privacy.num_microbatches is None:
                p_update["num_microbatches"] = training.batch_size
            if privacy.sampling is None:
                fast = privacy.implementation == "fast"
                p_update["sampling"] = "poisson" if fast else "shuffle"
            training = training.model_copy(update={"privacy": privacy.model_copy(update=p_update)})
        return spec.model_copy(
            update={
                "model": spec.model.model_copy(update={"layers": layers, "output": output}),
                "training": training,
            }
        )

    # ------------------------------------------------------------------ graph

    def graph(self, spec: Spec) -> Optional[Analysis]:
        layers = spec.model.layers
        input_name = spec.input.name
        by_name: dict[str, int] = {}
        for i, layer in enumerate(layers):
            if layer.name == input_name:
                self.error(
                    ("model", "layers", i, "name"),
                    "duplicate_name",
                    f"expected a name unused by the input, received {layer.name!r} "
                    "(the input's name)",
                )
            elif layer.name in by_name:
                self.error(
                    ("model", "layers", i, "name"),
                    "duplicate_name",
                    f"expected a unique layer name, received {layer.name!r} again "
                    f"(first used by model.layers[{by_name[layer.name]}])",
                )
            else:
                by_name[layer.name] = i
        edges: dict[str, list[str]] = {}
        sequential = True
        ok = True
        for i, layer in enumerate(layers):
            if layer.inputs is None:
                edges[layer.name] = [input_name if i == 0 else layers[i - 1].name]
                continue
            expected_prev = input_name if i == 0 else layers[i - 1].name
            if layer.inputs != [expected_prev]:
                sequential = False
            for j, ref in enumerate(layer.inputs):
                if ref != input_name and ref not in by_name:
                    ok = False
                    known = [input_name, *by_name]
                    self.error(
                        ("model", "layers", i, "inputs", j),
                        "unknown_input",
                        f"expected the name of a layer or the input, received {ref!r}"
                        + _did_you_mean(ref, known),
                    )
            edges[layer.name] = list(layer.inputs)
        output = spec.model.output
        if output not in by_name:
            self.error(
                ("model", "output"),
                "unknown_output",
                f"expected the name of a layer, received {output!r}"
                + _did_you_mean(str(output), list(by_name)),
            )
            return None
        if not ok or len(by_name) != len(layers):
            return None
        order = self._topological(layers, edges, by_name)
        if order is None:
            return None
        reachable = self._ancestors(output, edges)
        for i, layer in enumerate(layers):
            if layer.name not in reachable:
                self.error(
                    ("model", "layers", i),
                    "unused_layer",
                    f"expected every layer to feed the output {output!r}, received layer "
                    f"{layer.name!r} whose result is never used",
                )
        if output != layers[-1].name:
            sequential = False
        return self._shapes(spec, order, edges, by_name, output, sequential)

    def _topological(self, layers, edges, by_name) -> Optional[list[int]]:
        state: dict[str, int] = {}  # 1 visiting, 2 done
        order: list[int] = []
        for start in by_name:
            if state.get(start):
                continue
            stack = [(start, iter(edges[start]))]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next((n for n in it if n in by_name), None)
                if nxt is None:
                    stack.pop()
                    state[node] = 2
                    order.append(by_name[node])
                elif state.get(nxt) == 1:
                    cycle = [n for n, _ in stack[[n for n, _ in stack].index(nxt) :]] + [nxt]
                    self.error(
                        ("model", "layers", by_name[nxt], "inputs"),
                        "cycle",
                        "expected an acyclic graph, received the cycle " + " -> ".join(cycle),
                    )
                    return None
                elif not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, iter(edges[nxt])))
        return order

    @staticmethod
    def _ancestors(output: str, edges: dict[str, list[str]]) -> set[str]:
        seen = {output}
        todo = [output]
        while todo:
            for n in edges.get(todo.pop(), []):
                if n not in seen and n in edges:
                    seen.add(n)
                    todo.append(n)
        return seen

    def _shapes(self, spec, order, edges, by_name, output, sequential) -> Optional[Analysis]:
        inp = spec.input
        input_shape: Shape = (inp.batch_size, inp.sequence_length)
        shapes: dict[str, Optional[Shape]] = {inp.name: input_shape}
        producers: dict[str, LayerBase] = {}
        infos: list[LayerInfo] = []
        for i in order:
            layer = spec.model.layers[i]
            path: Path = ("model", "layers", i)
            ins = [shapes.get(n) for n in edges[layer.name]]
            shape, params = None, 0
            if all(s is not None for s in ins):
                shape, params = self._layer(spec, layer, path, ins, edges[layer.name], producers)
            shapes[layer.name] = shape
            producers[layer.name] = layer
            infos.append(LayerInfo(layer.name, layer.type, edges[layer.name], shape, params))
        out_shape = shapes[output]
        out_path: Path = ("model", "layers", by_name[output])
        vocab = inp.vocab_size
        if out_shape is not None:
            if len(out_shape) != 3:
                self.error(
                    out_path,
                    "output_shape",
                    "expected the output to be per-step logits of shape (batch, time, "
                    f"{vocab}), received shape {fmt_shape(out_shape)}"
                    + _upstream_hint(producers, edges, output),
                )
            elif out_shape[-1] != vocab:
                units = ("units",) if spec.model.layers[by_name[output]].output_activation() else ()
                self.error(
                    out_path + units,
                    "logits_size",
                    f"expected the logits layer to have input.vocab_size = {vocab} units, "
                    f"received {out_shape[-1]}",
                )
        out_layer = spec.model.layers[by_name[output]]
        from_logits = spec.training.loss.from_logits
        activation = out_layer.output_activation()
        if activation is not None:
            if from_logits and activation == "softmax":
                self.warn(
                    out_path + ("activation",),
                    "logits_activation",
                    "the loss expects logits (from_logits: true) but the output applies "
                    "softmax; use activation: linear",
                )
            elif not from_logits and activation == "linear":
                self.warn(
                    out_path + ("activation",),
                    "logits_activation",
                    "the loss expects probabilities (from_logits: false) but the output is "
                    "linear; use activation: softmax or from_logits: true",
                )
        if any(i is None for i in (s for s in shapes.values())):
            return None
        return Analysis(infos, output, sequential, input_shape)

    def _layer(self, spec, layer, path, ins, in_names, producers):
        """Output shape and parameter count of one layer, or (None, 0) after an error."""
        t = layer.type
        if layer.merges and len(ins) < 2:
            self.error(
                path + ("inputs",),
                "merge_inputs",
                f"expected at least 2 inputs for {t}, received {len(ins)}",
            )
            return None, 0
        if not layer.merges and len(ins) != 1:
            self.error(
                path + ("inputs",),
                "too_many_inputs",
                f"expected exactly 1 input for {t}, received {len(ins)}; merge them "
                "first with an add or concatenate layer",
            )
            return None, 0
        is_tokens = in_names[0] == spec.input.name
        if layer.reads_tokens and not is_tokens:
            self.error(
                path + ("inputs",),
                f"{t}_input",
                f"expected the token input {spec.input.name!r} to feed {_a(t)}, "
                f"received {in_names[0]!r} of shape {fmt_shape(ins[0])}",
            )
            return None, 0
        if not layer.reads_tokens and is_tokens:
            self.error(
                path,
                "needs_embedding",
                f"expected float features for {t}, received integer token ids of shape "
                f"{fmt_shape(ins[0])}; put an embedding layer first",
            )
            return None, 0
        shape = layer.output_shape(ins, _LayerContext(self, spec, path, in_names, producers))
        if shape is None:
            return None, 0
        return shape, layer.params(ins, shape)


class _LayerContext:
    """What a layer's shape rule sees (`compiler.layers.base.Context`)."""

    def __init__(
        self,
        checker: _Checker,
        spec: Spec,
        path: Path,
        inputs: list[str],
        producers: dict[str, LayerBase],
    ):
        self._checker, self._path, self._producers = checker, path, producers
        self.input = spec.input
        self.inputs = inputs

    def error(self, field: SubPath, code: str, message: str) -> None:
        self._checker.error(self._path + field, code, message)

    def warn(self, field: SubPath, code: str, message: str) -> None:
        self._checker.warn(self._path + field, code, message)

    def upstream_hint(self) -> str:
        return _upstream_hint(self._producers, {"": self.inputs}, "")


def layer_names(layers: list[tuple[str, Optional[str]]]) -> list[str]:
    """Each layer's name, given its (type, written name or None): a layer without one is
    named after its type, as Keras does (lstm, lstm_1, ...), skipping the names written."""
    taken = {name for _, name in layers if name}
    counters: dict[str, int] = {}
    out = []
    for kind, name in layers:
        while name is None:
            k = counters.get(kind, 0)
            counters[kind] = k + 1
            candidate = kind if k == 0 else f"{kind}_{k}"
            if candidate not in taken:
                name = candidate
        taken.add(name)
        out.append(name)
    return out


def _upstream_hint(producers: dict[str, LayerBase], edges: dict[str, list[str]], name: str) -> str:
    """How to keep the time axis the nearest layer upstream of `name` dropped, or ""."""
    todo = list(edges.get(name, []))
    while todo:
        n = todo.pop()
        layer = producers.get(n)
        if layer is None:
            continue
        hint = layer.time_axis_hint()
        if hint is not None:
            return hint
        todo.extend(edges.get(n, []))
    return ""


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def training_memory(spec: Spec, analysis: Analysis) -> dict[str, int]:
    """A static estimate, in bytes, of what training the spec holds in memory at once.

    Weights and their gradients, optimizer slots, activations kept for the backward pass
    (layer outputs, the gates of recurrent layers and attention's scores, for batch x
    sequence steps), and for DP with several microbatches the per-microbatch gradients
    tensorflow-privacy builds.
    """
    tr = spec.training
    params = analysis.total_params
    opt = tr.optimizer
    slots = {
        "rmsprop": 1 + int(getattr(opt, "momentum", 0) > 0) + int(getattr(opt, "centered", 0)),
        "adam": 2 + int(getattr(opt, "amsgrad", False)),
        "sgd": int(getattr(opt, "momentum", 0) > 0),
        "adagrad": 1,
    }[opt.type]
    steps = tr.batch_size * tr.sequence_length
    layers = {layer.name: layer for layer in spec.model.layers}
    widths = 0
    shapes = {spec.input.name: analysis.input_shape}
    for info in analysis.layers:
        if info.output_shape:
            widths += info.output_shape[-1] or 0
        inputs = [shapes[n] for n in info.inputs]
        widths += layers[info.name].activation_width(inputs, tr.sequence_length)
        shapes[info.name] = info.output_shape
    privacy = tr.privacy
    microbatches = (privacy.num_microbatches or tr.batch_size) if privacy else 0
    if privacy is not None and privacy.implementation == "fast":
        microbatches = 0  # gradients of the whole batch, never one per example
    return {
        "weights": 4 * params * 2,
        "optimizer": 4 * params * slots,
        "activations": 4 * steps * widths * 2,
        "per_example_gradients": 4 * params * microbatches if microbatches > 1 else 0,
    }


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def analyse(spec: Spec, source: Source) -> tuple[Spec, Optional[Analysis], list[Diagnostic]]:
    """Resolve defaults and analyse the graph (shapes, parameters), without the other rules.

    Returns:
        The resolved spec, the analysis (None when the graph is broken) and the graph's
        diagnostics.
    """
    checker = _Checker(spec, source)
    resolved = checker.resolve()
    return resolved, checker.graph(resolved), checker.diagnostics


def check(
    spec: Spec, source: Source, *, memory_limit: Optional[int] = None
) -> tuple[Spec, Optional[Analysis], list[Diagnostic]]:
    """Resolve defaults and check the semantic rules.

    Args:
        spec: The spec as written (templates expanded).
        source: Where it was written, for the diagnostics' positions.
        memory_limit: Bytes training may plan to use; None: no memory budget rule.

    Returns:
        The resolved spec, the analysis of its graph (None when the graph is broken)
        and the diagnostics (errors and warnings), in source order.
    """
    checker = _Checker(spec, source)
    resolved = checker.resolve()
    analysis = checker.graph(resolved)
    checker.training(resolved)
    checker.export(resolved)
    checker.data(resolved)
    if analysis is not None and memory_limit is not None:
        parts = training_memory(resolved, analysis)
        total = sum(parts.values())
        if total > memory_limit:
            detail = ", ".join(f"{k.replace('_', ' ')} {_gib(v)}" for k, v in parts.items() if v)
            checker.error(
                ("model",),
                "memory_budget",
                f"expected a model that trains within the memory limit of "
                f"{_gib(memory_limit)}, received an estimated {_gib(total)} ({detail}); make "
                "the model, batch or sequence smaller, or raise the limit (--memory-limit, "
                "e.g. 64GiB)",
            )
    diagnostics = sorted(
        checker.diagnostics, key=lambda d: (d.file, d.line or 0, d.column or 0, d.path)
    )
    return resolved, analysis, diagnostics
