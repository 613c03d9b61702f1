"""Cross-field rules of a resolved spec: training, distribution, DP, export and data.

`Rules` is the half of the checker (`compiler.lang.checks`) that reads the spec's sections
together; each method reports every problem it finds through `error` and `warn`, at the
field to change.
"""

from __future__ import annotations

import json

from compiler.lang.source import Path
from compiler.lang.spec import GENERATION_SIGNATURES, Spec


class Rules:
    """Rules of the spec's sections; the checker provides `error` and `warn`."""

    def error(self, path: Path, code: str, message: str) -> None:
        raise NotImplementedError

    def warn(self, path: Path, code: str, message: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ training

    def training(self, spec: Spec) -> None:
        inp, tr = spec.input, spec.training
        if inp.batch_size is not None and tr.batch_size != inp.batch_size:
            self.error(
                ("training", "batch_size"),
                "batch_size_mismatch",
                f"expected input.batch_size = {inp.batch_size} (the model's fixed batch), "
                f"received {tr.batch_size}",
            )
        if inp.sequence_length is not None and tr.sequence_length != inp.sequence_length:
            self.error(
                ("training", "sequence_length"),
                "sequence_length_mismatch",
                f"expected input.sequence_length = {inp.sequence_length} (the model's fixed "
                f"length), received {tr.sequence_length}",
            )
        for i, layer in enumerate(spec.model.layers):
            length = layer.context_length()
            if length is not None and length < tr.sequence_length:
                self.error(
                    ("model", "layers", i, "sequence_length"),
                    "position_length",
                    f"expected sequence_length >= training.sequence_length = "
                    f"{tr.sequence_length} (every position of a training window needs a "
                    f"row), received {length}",
                )
        p = tr.privacy
        stateful = [
            (i, layer.name) for i, layer in enumerate(spec.model.layers) if layer.is_stateful
        ]
        d = tr.distribution
        if p is None and stateful and d is not None and d.strategy != "one_device":
            names = ", ".join(repr(name) for _, name in stateful)
            self.warn(
                ("model", "layers", stateful[0][0], "stateful"),
                "distribution_stateful",
                f"expected stateless recurrent layers under strategy {d.strategy}, received "
                f"stateful {names}: Keras cannot run stateful RNNs under tf.distribute, so "
                "training uses stateless copies (zero state at every batch); the trained "
                "weights load into the stateful layers unchanged",
            )
        if p is not None and stateful:
            names = ", ".join(repr(name) for _, name in stateful)
            self.warn(
                ("model", "layers", stateful[0][0], "stateful"),
                "dp_stateful",
                f"expected stateless recurrent layers under DP, received stateful {names}: "
                "DP training trains them as stateless copies (zero state at every batch), so "
                "that no record reaches another batch's gradients through a carried state, "
                "which clipping cannot bound; the trained weights load into the stateful "
                "layers unchanged",
            )
        if p is not None:
            if (p.noise_multiplier is None) == (p.target_epsilon is None):
                both = p.noise_multiplier is not None
                self.error(
                    ("training", "privacy") + (("target_epsilon",) if both else ()),
                    "privacy_noise",
                    "expected exactly one of noise_multiplier and target_epsilon, received "
                    + ("both" if both else "neither"),
                )
            if p.num_microbatches is not None and tr.batch_size % p.num_microbatches:
                self.error(
                    ("training", "privacy", "num_microbatches"),
                    "microbatches",
                    f"expected a divisor of training.batch_size = {tr.batch_size}, received "
                    f"{p.num_microbatches}",
                )
        if p is not None and p.sampling == "poisson" and p.implementation != "fast":
            self.error(
                ("training", "privacy", "sampling"),
                "poisson_sampling",
                f"expected sampling shuffle with implementation {p.implementation}, received "
                "poisson: tensorflow-privacy's optimizers need full batches of "
                "num_microbatches equal parts; use implementation fast for Poisson sampling",
            )
        if p is not None and p.implementation == "fast":
            self.fast_dp(spec)
        if tr.distribution is not None:
            self.distribution(spec)
        tok = tr.tokenizer
        if tok.type == "sentencepiece" and tok.vocab_size != inp.vocab_size:
            self.error(
                ("training", "tokenizer", "vocab_size"),
                "vocab_size",
                f"expected input.vocab_size = {inp.vocab_size}, received {tok.vocab_size}",
            )
        es = tr.early_stopping
        if es is not None and es.monitor.startswith("val_") and tr.validation_split == 0:
            self.error(
                ("training", "early_stopping", "monitor"),
                "no_validation",
                f"expected validation_split > 0 to monitor {es.monitor!r}, received "
                "validation_split: 0",
            )
        if (
            es is not None
            and es.monitor.endswith("accuracy")
            and not any("accuracy" in m for m in tr.metrics)
        ):
            self.error(
                ("training", "early_stopping", "monitor"),
                "unknown_metric",
                f"expected a metric in training.metrics to monitor {es.monitor!r}, received "
                f"metrics {tr.metrics}",
            )

    def distribution(self, spec: Spec) -> None:
        tr = spec.training
        d = tr.distribution
        path = ("training", "distribution")
        if d.strategy == "one_device" and d.replicas != 1:
            field = "workers" if d.workers != 1 else "devices_per_worker"
            self.error(
                path + (field,),
                "distribution_replicas",
                f"expected {field}: 1 with strategy one_device, received {getattr(d, field)}; "
                "use mirrored for several devices, multi_worker for several workers",
            )
        if d.strategy == "mirrored" and d.workers != 1:
            self.error(
                path + ("workers",),
                "distribution_replicas",
                f"expected workers: 1 with strategy mirrored (the devices of one machine), "
                f"received {d.workers}; use strategy multi_worker for several workers",
            )
        if tr.batch_size % d.replicas:
            self.error(
                ("training", "batch_size"),
                "distribution_batch",
                f"expected a multiple of the {d.replicas} replicas (workers "
                f"{d.workers} x devices_per_worker {d.devices_per_worker}), received "
                f"{tr.batch_size}: each replica takes an equal share of the global batch",
            )
        p = tr.privacy
        if p is not None and d.replicas > 1 and p.implementation != "fast":
            self.error(
                ("training", "privacy", "implementation"),
                "distribution_dp",
                f"expected implementation fast under distribution ({d.replicas} replicas), "
                f"received {p.implementation}: tensorflow-privacy's optimizers noise each "
                "replica's gradient, adding the noise once per replica instead of once per "
                "global step",
            )

    def fast_dp(self, spec: Spec) -> None:
        """What the fast per-example implementation needs: one microbatch per example and
        layers whose per-example gradient norms it computes."""
        tr = spec.training
        p = tr.privacy
        if p.num_microbatches is not None and p.num_microbatches != tr.batch_size:
            self.error(
                ("training", "privacy", "num_microbatches"),
                "fast_microbatches",
                f"expected null or training.batch_size = {tr.batch_size} with implementation "
                f"fast (it clips each example), received {p.num_microbatches}; use "
                "implementation standard or vectorized to clip microbatches",
            )
        for i, layer in enumerate(spec.model.layers):
            for field, value, expected, hint in layer.fast_dp_problems():
                self.error(
                    ("model", "layers", i, field),
                    "fast_unsupported",
                    f"expected {field}: {expected} in layer {layer.name!r} with privacy "
                    f"implementation fast, received {json.dumps(value)}; {hint}, or use "
                    "implementation standard or vectorized",
                )

    def export(self, spec: Spec) -> None:
        sigs = spec.export.signatures
        if sigs is None:
            return
        if "serving_default" not in sigs:
            self.error(
                ("export", "signatures"),
                "serving_default",
                f"expected serving_default among the signatures (TF Serving needs it), "
                f"received {sigs}",
            )
        for i, s in enumerate(sigs):
            if s in sigs[:i]:
                self.error(
                    ("export", "signatures", i),
                    "duplicate_signature",
                    f"expected unique signature names, received {s!r} twice",
                )
        ahead = [(i, layer) for i, layer in enumerate(spec.model.layers) if not layer.is_causal()]
        if ahead:
            for i, name in enumerate(sigs):
                if name in GENERATION_SIGNATURES:
                    self.error(
                        ("export", "signatures", i),
                        "not_causal",
                        f"expected a causal model for {name}, received one whose layer "
                        f"{ahead[0][1].name!r} (model.layers[{ahead[0][0]}]) sees later "
                        "tokens; remove the signature, or make the layer causal",
                    )

    def data(self, spec: Spec) -> None:
        """The data block's columns: each rule is one a value can pass."""
        import datetime as dt

        d = spec.data
        if d is None:
            return
        if d.format == "text" and (d.fields or d.delimiter or d.header):
            self.error(
                ("data", "format"),
                "data_text_columns",
                "expected no delimiter, header or fields with format: text, received "
                "some; use format: csv for delimited records",
            )
        if d.delimiter is not None and d.delimiter in (d.quotechar, "\n", "\r"):
            self.error(
                ("data", "delimiter"),
                "data_delimiter",
                f"expected a delimiter other than the quote character and line ends, "
                f"received {d.delimiter!r}",
            )
        names: set[str] = set()
        for i, f in enumerate(d.fields or []):
            path = ("data", "fields", i)
            if f.name in names:
                self.error(
                    path + ("name",),
                    "duplicate_field",
                    f"expected unique field names, received {f.name!r} twice",
                )
            names.add(f.name)
            temporal = f.kind in ("date", "datetime", "time")
            own = {
                "values": f.kind == "categorical",
                "format": temporal,
                "decimals": f.kind == "decimal",
                "max_length": f.kind == "text",
                "min": f.kind in ("integer", "decimal") or temporal,
                "max": f.kind in ("integer", "decimal") or temporal,
            }
            for key, applies in own.items():
                if getattr(f, key) is not None and not applies:
                    kind = "a field without a kind" if f.kind is None else f"a {f.kind} field"
                    self.error(
                        path + (key,),
                        "field_option",
                        f"expected no {key} for {kind}, received {getattr(f, key)!r}",
                    )
            if f.kind == "categorical" and f.values is None:
                self.error(
                    path + ("values",),
                    "field_values",
                    "expected the allowed values of a categorical field, received none",
                )
            if temporal and f.format is None:
                self.error(
                    path + ("format",),
                    "field_format",
                    f"expected the strftime format of a {f.kind} field (e.g. %Y-%m-%d), "
                    "received none",
                )
                continue
            bounds = {}
            for key in ("min", "max"):
                value = getattr(f, key)
                if value is None:
                    continue
                if temporal:
                    try:
                        bounds[key] = dt.datetime.strptime(str(value), str(f.format))
                    except ValueError:
                        self.error(
                            path + (key,),
                            "field_bound",
                            f"expected a value in format {f.format!r}, received " f"{value!r}",
                        )
                elif isinstance(value, str):
                    self.error(
                        path + (key,),
                        "field_bound",
                        f"expected a number for a {f.kind} field, received {value!r}",
                    )
                else:
                    bounds[key] = value
            if len(bounds) == 2 and bounds["min"] > bounds["max"]:
                self.error(
                    path + ("max",),
                    "field_range",
                    f"expected max >= min = {f.min!r}, received {f.max!r}",
                )
