"""Compiling: a resolved spec to a compiled tf-keras model, its optimizer, loss and metrics.

Each spec layer builds its own Keras layer (`compiler.layers`); `_optimizer_class` maps
optimizer types to Keras 2 legacy classes, which tensorflow-privacy wraps. A chain compiles
to `Sequential`, anything else to a functional `Model`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Optional, Union

from compiler.diagnostics import CompileError, Diagnostic, SpecError
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec, checked
from compiler.lang.checks import Analysis
from compiler.lang.source import Source
from compiler.layers.base import fmt_shape
from compiler.layers.states import POSITION, State, serving_states
from compiler.privacy import fast as fast_dp
from compiler.privacy.accounting import PrivacyReport, privacy_report, weak_privacy_warning
from compiler.tf import tensorflow, tf_keras, tf_privacy_optimizers


def _optimizer_kwargs(opt: Any) -> dict[str, Any]:
    return opt.model_dump(exclude={"type"})


def _optimizer_class(kind: str) -> type:
    """The Keras 2 legacy class of an optimizer type (which tensorflow-privacy wraps)."""
    return getattr(tf_keras().optimizers.legacy, s.OPTIMIZER_MODELS[kind].keras_class)


@dataclasses.dataclass
class CompiledModel:
    """A compiled tf-keras model with everything it was compiled with.

    Attributes:
        spec: The resolved spec it was built from.
        model: The compiled `tf_keras.Model` (Sequential for a chain).
        optimizer: The optimizer instance (a tensorflow-privacy class for DP specs).
        loss: The loss object.
        metrics: The metric identifiers passed to `compile`.
        analysis: The static analysis of the spec's graph.
        privacy: The privacy guarantee, when the spec is DP and `examples` was given.
        warnings: Warnings from validation and compilation.
        dp_step: With the fast DP implementation, the model's train step (its settings,
            secret noise key and canaries, `compiler.privacy.fast.DPStep`); None otherwise.
    """

    spec: s.Spec
    model: Any
    optimizer: Any
    loss: Any
    metrics: list[str]
    analysis: Analysis
    privacy: Optional[PrivacyReport] = None
    warnings: list[Diagnostic] = dataclasses.field(default_factory=list)
    dp_step: Optional[fast_dp.DPStep] = None

    @property
    def per_example_loss(self) -> bool:
        return getattr(self.loss, "reduction", None) == "none"

    def optimizer_config(self) -> dict[str, Any]:
        """The optimizer's Keras config and, for a DP spec, its privacy settings."""
        privacy = self.spec.training.privacy
        wrapped = privacy is not None and privacy.implementation != "fast"
        out = {
            "class_name": type(self.optimizer).__name__,
            # tensorflow-privacy's classes wrap a Keras optimizer; the fast step clips and
            # noises before a plain one.
            "base_class": type(self.optimizer).__mro__[1 if wrapped else 0].__name__,
            "config": _plain(self.optimizer.get_config()),
        }
        if privacy is not None:
            settings = privacy.model_dump()
            if self.privacy is not None:  # derived from target_epsilon and the examples
                epsilon = self.privacy.epsilon
                settings.update(
                    noise_multiplier=self.privacy.noise_multiplier,
                    delta=self.privacy.delta,
                    epsilon=None if math.isinf(epsilon) else epsilon,
                )
            out["privacy"] = _plain(settings)
        return out

    def summary(self) -> dict[str, Any]:
        """Layers, output shapes, parameter counts, optimizer and privacy settings."""
        layers = []
        for layer in self.model.layers:
            if layer.__class__.__name__ == "InputLayer":
                continue
            shape = layer.output_shape
            layers.append(
                {
                    "name": layer.name,
                    "class": layer.__class__.__name__,
                    "output_shape": list(shape) if isinstance(shape, tuple) else shape,
                    "params": int(layer.count_params()),
                }
            )
        privacy = self.spec.training.privacy
        return {
            "name": self.spec.name,
            "model_class": type(self.model).__name__,
            "layers": layers,
            "total_params": int(self.model.count_params()),
            "optimizer": self.optimizer_config(),
            "loss": {
                "class_name": type(self.loss).__name__,
                "from_logits": self.spec.training.loss.from_logits,
                "reduction": str(self.loss.reduction),
            },
            "metrics": self.metrics,
            "privacy": (
                None
                if privacy is None
                else {
                    **privacy.model_dump(exclude_none=True),
                    **({"guarantee": self.privacy.to_dict()} if self.privacy else {}),
                }
            ),
            "distribution": s.distribution_summary(self.spec),
        }

    def summary_text(self) -> str:
        data = self.summary()
        rows = [("layer", "class", "output shape", "params")]
        rows += [
            (x["name"], x["class"], fmt_shape(tuple(x["output_shape"])), f"{x['params']:,}")
            for x in data["layers"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"{data['name']}: {data['model_class']}"]
        for i, r in enumerate(rows):
            lines.append(
                "  ".join(
                    c.rjust(w) if j == 3 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))
                ).rstrip()
            )
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(f"total params: {data['total_params']:,}")
        opt = data["optimizer"]
        cfg = opt["config"]
        hp = ", ".join(f"{k}={cfg[k]}" for k in cfg if k not in ("name", "is_legacy_optimizer"))
        name = opt["class_name"]
        if opt["base_class"] != name:
            name = f"{name}[{opt['base_class']}]"
        lines.append(f"optimizer: {name}({hp})")
        loss = data["loss"]
        lines.append(
            f"loss: {loss['class_name']}(from_logits={loss['from_logits']}, "
            f"reduction={loss['reduction']})"
        )
        lines.append(f"metrics: {', '.join(data['metrics'])}")
        if data["privacy"]:
            p = dict(data["privacy"])
            guarantee = p.pop("guarantee", None)
            lines.append("privacy: " + ", ".join(f"{k}={v}" for k, v in p.items()))
            if guarantee:
                eps = guarantee["epsilon"]
                lines.append(
                    f"epsilon: {'inf' if eps is None else f'{eps:.4g}'} at delta "
                    f"{guarantee['delta']:.3g} ({guarantee['examples']} examples, "
                    f"{guarantee['epochs']:g} epochs)"
                )
        if data["distribution"]:
            d = data["distribution"]
            lines.append(
                f"distribution: {d['strategy']}, {d['replicas']} replica(s) "
                f"({d['workers']} worker(s) x {d['devices_per_worker']} device(s)), "
                f"global batch {d['global_batch']}, per-replica batch {d['replica_batch']}"
                + ("; stateful layers are built for the per-replica batch" if d["stateful"] else "")
            )
        return "\n".join(lines) + "\n"


def replica_batch(spec: s.Spec) -> Optional[int]:
    """The model's fixed batch dimension: input.batch_size, shared among the replicas."""
    batch = spec.input.batch_size
    d = spec.training.distribution
    return batch // d.replicas if batch is not None and d is not None else batch


def _plain(value: Any) -> Any:
    """Config values as JSON-friendly Python types (numpy scalars, tensors, ...)."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "tolist", lambda: str(v))()))


def compile_spec(
    spec: Union[s.Spec, CheckedSpec],
    *,
    examples: Optional[int] = None,
    noise_multiplier: Optional[float] = None,
    weighted_metrics: bool = False,
) -> CompiledModel:
    """Build and compile the Keras model a spec describes.

    Args:
        spec: A checked spec from `load_spec` (a `Spec` built in Python is checked first).
        examples: Number of training examples; with a DP spec it lets the privacy
            guarantee be computed (and is required when the spec gives target_epsilon).
        noise_multiplier: For a DP spec, the noise to train with instead of the spec's (a
            run derives it once from target_epsilon and its records).
        weighted_metrics: Compile the metrics as weighted metrics, for data that carries
            per-token sample weights (training's record examples mask their padding).

    Returns:
        The compiled model with its optimizer, loss, metrics and summary.

    Raises:
        SpecError: when a spec built in Python violates a rule.
        CompileError: when TensorFlow refuses the model; the diagnostic names the layer.
    """
    c = checked(spec)
    resolved, analysis, source = c.spec, c.analysis, c.source
    warnings = list(c.warnings)
    tf = tensorflow()
    report = None
    privacy = resolved.training.privacy
    noise = None
    if privacy is not None:
        if examples is None and noise_multiplier is None and privacy.noise_multiplier is None:
            raise SpecError(
                [
                    source.diagnostic(
                        ("training", "privacy", "target_epsilon"),
                        "needs_examples",
                        "expected the number of training examples to derive the noise "
                        "multiplier from target_epsilon, received none (pass examples=N, "
                        "or --examples N)",
                    )
                ]
            )
        if examples is not None:
            report = privacy_report(c, examples)
            weak = weak_privacy_warning(c, report)
            if weak is not None:
                warnings.append(weak)
        noise = next(
            n
            for n in (
                noise_multiplier,
                report and report.noise_multiplier,
                privacy.noise_multiplier,
            )
            if n is not None
        )
    dp_step = _dp_step(resolved, analysis, noise)
    model = _build_model(tf, resolved, analysis, source, dp_step)
    optimizer = _build_optimizer(tf, resolved, noise, source)
    loss = _build_loss(tf, resolved)
    metrics = list(resolved.training.metrics)
    try:
        if weighted_metrics:
            model.compile(optimizer=optimizer, loss=loss, weighted_metrics=metrics)
        else:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    except (ValueError, TypeError) as e:
        raise CompileError(
            [source.diagnostic(("training",), "keras_compile", _keras_message(e))]
        ) from e
    if _fast(resolved):
        # The DP step reads the step counter before the first update: create it now, in
        # the current (maybe distributed) scope, not inside a replica's first step.
        _ = optimizer.iterations
    return CompiledModel(
        resolved, model, optimizer, loss, metrics, analysis, report, warnings, dp_step
    )


def _keras_message(e: Exception) -> str:
    text = str(e)
    # Keras 2 wraps a layer's error between a header and a dump of the call arguments.
    if text.startswith("Exception encountered when calling layer"):
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        core = [p for p in paragraphs[1:] if not p.startswith("Call arguments received")]
        text = " ".join(core) or text
    text = " ".join(text.split())
    return f"TensorFlow refused it: {text[:500]}"


def _build_model(
    tf: Any,
    spec: s.Spec,
    analysis: Analysis,
    source: Source,
    dp_step: Optional[fast_dp.DPStep],
) -> Any:
    index = {layer.name: i for i, layer in enumerate(spec.model.layers)}
    batch_shape = (replica_batch(spec), spec.input.sequence_length)

    errors = (ValueError, TypeError, tf.errors.OpError)

    def refused(i: int, e: Exception) -> CompileError:
        return CompileError(
            [source.diagnostic(("model", "layers", i), "keras_layer", _keras_message(e))]
        )

    def build(i: int, **extra: Any) -> Any:
        layer = spec.model.layers[i]
        try:
            return layer.keras(tf, **extra)
        except errors as e:
            raise refused(i, e) from e

    keras = tf_keras()
    sequential_class, functional_class = keras.Sequential, keras.Model
    if dp_step is not None:
        sequential_class, functional_class = fast_dp.model_classes()
    if analysis.sequential:
        # The reference form: the first layer carries batch_input_shape. Layers are added
        # one by one so that a layer TensorFlow refuses is named in the error.
        model = sequential_class(name=_keras_name(spec.name))
        for i in range(len(spec.model.layers)):
            keras_layer = build(i, batch_input_shape=list(batch_shape)) if i == 0 else build(i)
            try:
                model.add(keras_layer)
            except errors as e:
                raise refused(i, e) from e
    else:
        tensors = {
            spec.input.name: keras.Input(
                batch_shape=batch_shape, dtype="int32", name=spec.input.name
            )
        }
        for info in analysis.layers:
            i = index[info.name]
            inputs = [tensors[n] for n in info.inputs]
            keras_layer = build(i)
            try:
                tensors[info.name] = keras_layer(inputs if len(inputs) > 1 else inputs[0])
            except errors as e:
                raise refused(i, e) from e
        model = functional_class(
            tensors[spec.input.name], tensors[analysis.output], name=_keras_name(spec.name)
        )
    if dp_step is not None:
        model.train_with(dp_step)
    return model


def _fast(spec: s.Spec) -> bool:
    privacy = spec.training.privacy
    return privacy is not None and privacy.implementation == "fast"


def call_graph(spec: s.Spec, analysis: Analysis) -> fast_dp.Graph:
    """The layers in call order with their inputs, the input and the output: what the fast
    DP forward pass and the serving loop's one-token step walk."""
    return fast_dp.Graph(
        tuple((info.name, tuple(info.inputs)) for info in analysis.layers),
        tuple((info.name, info.type) for info in analysis.layers),
        spec.input.name,
        analysis.output,
    )


def _dp_step(spec: s.Spec, analysis: Analysis, noise: Optional[float]) -> Optional[fast_dp.DPStep]:
    """The fast DP train step, or None when the spec does not train with it."""
    if not _fast(spec):
        return None
    privacy = spec.training.privacy
    dp = fast_dp.FastDP(privacy.l2_norm_clip, noise, spec.training.batch_size)
    return fast_dp.DPStep(call_graph(spec, analysis), dp)


def _keras_name(name: str) -> str:
    return name.replace("-", "_")


def _build_optimizer(tf: Any, spec: s.Spec, noise: Optional[float], source: Source) -> Any:
    opt = spec.training.optimizer
    base = _optimizer_class(opt.type)
    kwargs = _optimizer_kwargs(opt)
    privacy = spec.training.privacy
    if privacy is None or privacy.implementation == "fast":
        return base(**kwargs)  # the fast step clips and noises before the optimizer
    try:
        standard, vectorized = tf_privacy_optimizers()
    except ImportError as e:
        raise CompileError(
            [
                source.diagnostic(
                    ("training", "privacy", "implementation"),
                    "tensorflow_privacy",
                    f"expected tensorflow-privacy for implementation {privacy.implementation} "
                    f"(its optimizers), received an install without it ({e}); it needs Python "
                    "3.11 (pip install 'keraspec[tensorflow]' there), or use implementation: "
                    "fast, which needs no tensorflow-privacy",
                )
            ]
        ) from e
    if privacy.implementation == "vectorized":
        dp_class = vectorized.make_vectorized_keras_optimizer_class(base)
    else:
        dp_class = standard.make_keras_optimizer_class(base)
    return dp_class(
        l2_norm_clip=privacy.l2_norm_clip,
        noise_multiplier=noise,
        num_microbatches=privacy.num_microbatches,
        **kwargs,
    )


def _build_loss(tf: Any, spec: s.Spec) -> Any:
    privacy = spec.training.privacy
    # tensorflow-privacy splits the loss into microbatches, so with more than one it needs
    # the per-example losses; a batch mean would make every microbatch share one gradient.
    per_example = privacy is not None and (
        (privacy.num_microbatches or 0) > 1 or privacy.implementation == "fast"
    )
    keras = tf_keras()
    reduction = keras.losses.Reduction.NONE if per_example else keras.losses.Reduction.AUTO
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=spec.training.loss.from_logits, reduction=reduction
    )


def build_state_model(spec: Union[s.Spec, CheckedSpec]) -> tuple[Any, list[State]]:
    """The spec's model as a stateless functional model that takes and returns its states.

    Inputs are the token ids (variable batch and length) and each state (a recurrent
    layer's h and c, an attention layer's key and value cache, a causal convolution's
    window, the rows' `position`); outputs are the logits and each state after the tokens.
    Every layer has the spec's name and the spec's weights layout, so weights copy over by
    name. This is the model behind the serving signatures: its answers depend only on its
    inputs.

    Raises:
        SpecError: when the spec violates a rule.
        CompileError: when TensorFlow refuses a layer.
    """
    c = checked(spec)
    resolved, analysis, source = c.spec, c.analysis, c.source
    tf, keras = tensorflow(), tf_keras()
    index = {layer.name: i for i, layer in enumerate(resolved.model.layers)}
    states = serving_states(resolved, analysis)
    tokens = keras.Input(shape=(None,), dtype="int32", name=resolved.input.name)
    state_inputs = {
        st.name: keras.Input(shape=st.shape, dtype=st.dtype, name=st.name) for st in states
    }
    position = state_inputs.get(POSITION)
    tensors = {resolved.input.name: tokens}
    state_outputs: dict[str, Any] = {}
    for info in analysis.layers:
        i = index[info.name]
        layer = resolved.model.layers[i]
        inputs = [tensors[n] for n in info.inputs]
        x = inputs if len(inputs) > 1 else inputs[0]
        mine = [st.name for st in states if st.layer == layer.name]
        try:
            if mine or layer.uses_position:
                out, final = layer.call_with_state(
                    layer.state_keras(tf), x, [state_inputs[n] for n in mine], position
                )
                state_outputs.update(zip(mine, final))
                tensors[info.name] = out
            else:
                tensors[info.name] = layer.keras(tf)(x)
        except (ValueError, TypeError) as e:
            raise CompileError(
                [source.diagnostic(("model", "layers", i), "keras_layer", _keras_message(e))]
            ) from e
    if position is not None:
        state_outputs[POSITION] = position + tf.shape(tokens)[1]
    model = keras.Model(
        [tokens, *state_inputs.values()],
        [tensors[analysis.output], *(state_outputs[st.name] for st in states)],
        name=_keras_name(resolved.name) + "_serving",
    )
    return model, states
