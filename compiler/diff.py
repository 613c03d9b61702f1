"""Comparing two specs statically, for code review: what a change does to the model.

`diff_specs(old, new)` compares the resolved specs (templates expanded, defaults filled) and
reports, without TensorFlow:

- fields changed, added and removed, by dotted path;
- layers added, removed, renamed or changed, with parameter counts per layer and in total;
- checkpoint compatibility: whether weights trained with OLD load into NEW (the same
  variables with the same shapes, in the same order, which is how TensorFlow checkpoints
  match them);
- serving compatibility: whether the exported signatures keep their inputs and outputs
  (names, dtypes, shapes, vocabulary size), so TF Serving clients keep working;
- privacy changes (clip, noise, microbatches) and, given a number of examples, the epsilon
  before and after (dp_accounting, still no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from typing import Any, Optional, Union

from compiler.diagnostics import Diagnostic, SpecError
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec, checked
from compiler.lang.checks import Analysis
from compiler.lang.parse import load_spec
from compiler.lang.render import flatten, to_data
from compiler.layers.states import serving_states

_MISSING = "<absent>"


def load_revision(reference: str) -> CheckedSpec:
    """Load a spec from a file, or from git as REV:PATH (read from git's objects, no checkout).

    The revision is resolved to a commit id first (`git rev-parse --verify --end-of-options`)
    and refused when it could be read as an option, so a reference from an untrusted pull
    request cannot pass options to git. PATH may itself contain ':'.

    Raises:
        SpecError: the file or revision cannot be read, or the spec is invalid.
    """
    if os.path.exists(reference) or ":" not in reference:
        return load_spec(reference if os.path.exists(reference) else os.fspath(reference))
    revision, _, path = reference.partition(":")

    def refuse(message: str) -> SpecError:
        return SpecError([Diagnostic("error", "git", message, "", reference)])

    if (
        not revision
        or revision.startswith("-")
        or any(c.isspace() or ord(c) < 32 for c in revision)
    ):
        raise refuse(
            f"expected a git revision (a branch, tag or commit) before ':', received "
            f"{revision!r}"
        )
    if not path:
        raise refuse("expected a file path after the revision (REV:PATH), received none")
    commit = _git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"],
        reference,
    )
    if commit.returncode != 0 or not re.fullmatch(rb"[0-9a-f]{40,64}\s*", commit.stdout):
        raise refuse(
            f"expected a revision of this repository, received {revision!r}, which "
            "git does not know"
        )
    oid = commit.stdout.decode().strip()
    shown = _git(["cat-file", "blob", f"{oid}:{path}"], reference)
    if shown.returncode != 0:
        message = shown.stderr.decode("utf-8", "replace").strip().splitlines()
        raise refuse(
            f"expected a file at revision {revision!r}, received: "
            f"{message[-1] if message else 'git failed'}"
        )
    return load_spec(shown.stdout, name=reference)


def _git(arguments: list[str], reference: str) -> "subprocess.CompletedProcess[bytes]":
    try:
        return subprocess.run(["git", *arguments], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SpecError(
            [
                Diagnostic(
                    "error",
                    "git",
                    f"expected git to read {reference}, " f"received: {e}",
                    "",
                    reference,
                )
            ]
        ) from e


def weights_of(
    spec: CheckedSpec, analysis: Analysis
) -> list[tuple[str, str, list[str], list[tuple]]]:
    """(layer, type, variable names, shapes) of every layer with weights, in model order."""
    shapes: dict[str, Any] = {spec.input.name: analysis.input_shape}
    layers = {layer.name: layer for layer in spec.model.layers}
    out = []
    for info in analysis.layers:
        shapes[info.name] = info.output_shape
        layer = layers[info.name]
        variables = layer.weights([shapes[n] for n in info.inputs], info.output_shape)
        if variables:
            out.append(
                (
                    info.name,
                    layer.type,
                    [n for n, _ in variables],
                    [shape for _, shape in variables],
                )
            )
    return out


def serving_interface(spec: CheckedSpec, analysis: Analysis) -> dict[str, Any]:
    """The inputs and outputs of the signatures an export of this spec would have."""
    vocab = spec.input.vocab_size
    states = {st.name: [st.dtype, [None, *st.shape]] for st in serving_states(spec, analysis)}
    tokens = {spec.input.name: ["int32", [None, None]]}
    generation_in = {
        "max_new_tokens": ["int32", []],
        "temperature": ["float32", []],
        "seed": ["int64", []],
    }
    generation_out = {"lengths": ["int32", [None]], "complete": ["bool", [None]]}
    interface = {
        "serving_default": {
            "inputs": tokens,
            "outputs": {
                "logits": ["float32", [None, None, vocab]],
                "next_token_probs": ["float32", [None, vocab]],
            },
        },
        "step": {
            "inputs": {**tokens, **states},
            "outputs": {"logits": ["float32", [None, None, vocab]], **states},
        },
        "generate": {
            "inputs": {"prompt": ["int32", [None, None]], **generation_in},
            "outputs": {"tokens": ["int32", [None, None]], **generation_out},
        },
        "generate_text": {
            "inputs": {"prompt": ["string", [None]], **generation_in},
            "outputs": {"text": ["string", [None]], "complete": ["bool", [None]]},
        },
    }
    char = spec.training.tokenizer.type == "char"
    wanted = s.signatures_to_export(spec, text_in_graph=char)
    return {name: interface[name] for name in wanted}


@dataclasses.dataclass
class SpecDiff:
    """The differences between two resolved specs (see the module docstring)."""

    old: str
    new: str
    fields: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    params: dict[str, int]
    checkpoint: dict[str, Any]
    serving: dict[str, Any]
    privacy: Optional[dict[str, Any]]

    @property
    def equivalent(self) -> bool:
        return not self.fields

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "equivalent": self.equivalent}


def _layer_rows(old: CheckedSpec, new: CheckedSpec, old_a: Analysis, new_a: Analysis) -> list[dict]:
    params_old = {i.name: i.params for i in old_a.layers}
    params_new = {i.name: i.params for i in new_a.layers}
    old_layers = {layer.name: layer for layer in old.model.layers}
    new_layers = {layer.name: layer for layer in new.model.layers}

    def config(layer: Any) -> dict[str, Any]:
        return layer.model_dump(mode="json", exclude={"name"})

    rows = []
    removed = [n for n in old_layers if n not in new_layers]
    added = [n for n in new_layers if n not in old_layers]
    renamed = {}
    for a in list(removed):
        for b in added:
            if b not in renamed.values() and config(old_layers[a]) == config(new_layers[b]):
                renamed[a] = b
                break
    for name, layer in old_layers.items():
        if name in new_layers:
            before, after = config(layer), config(new_layers[name])
            changes = {
                key: [before.get(key, _MISSING), after.get(key, _MISSING)]
                for key in sorted(set(before) | set(after))
                if before.get(key, _MISSING) != after.get(key, _MISSING)
            }
            status = "changed" if changes else "same"
            rows.append(
                {
                    "layer": name,
                    "type": layer.type,
                    "status": status,
                    "changes": changes,
                    "params_old": params_old.get(name, 0),
                    "params_new": params_new.get(name, 0),
                }
            )
        elif name in renamed:
            rows.append(
                {
                    "layer": name,
                    "type": layer.type,
                    "status": "renamed",
                    "renamed_to": renamed[name],
                    "changes": {},
                    "params_old": params_old.get(name, 0),
                    "params_new": params_new.get(renamed[name], 0),
                }
            )
        else:
            rows.append(
                {
                    "layer": name,
                    "type": layer.type,
                    "status": "removed",
                    "changes": {},
                    "params_old": params_old.get(name, 0),
                    "params_new": 0,
                }
            )
    for name in added:
        if name not in renamed.values():
            rows.append(
                {
                    "layer": name,
                    "type": new_layers[name].type,
                    "status": "added",
                    "changes": {},
                    "params_old": 0,
                    "params_new": params_new.get(name, 0),
                }
            )
    return rows


def _checkpoint(old_w: list, new_w: list) -> dict[str, Any]:
    def describe(w: tuple) -> str:
        variables = ", ".join(f"{n} {_shape(sh)}" for n, sh in zip(w[2], w[3]))
        return f"{w[1]} {w[0]!r} [{variables}]"

    problems = []
    for i in range(max(len(old_w), len(new_w))):
        a = old_w[i] if i < len(old_w) else None
        b = new_w[i] if i < len(new_w) else None
        if a is None or b is None:
            side = "only in NEW" if a is None else "only in OLD"
            problems.append(f"weights #{i}: {describe(b if a is None else a)} {side}")
        elif a[1] != b[1] or a[2] != b[2]:
            problems.append(f"weights #{i}: {describe(a)} -> {describe(b)}")
        else:
            for name, sa, sb in zip(a[2], a[3], b[3]):
                if sa != sb:
                    problems.append(f"{b[0]}.{name}: {_shape(sa)} -> {_shape(sb)}")
    return {"compatible": not problems, "differences": problems}


def _shape(shape: Optional[tuple]) -> str:
    return "absent" if shape is None else str(tuple(shape))


def _serving(old_i: dict, new_i: dict) -> dict[str, Any]:
    problems = []
    for signature in sorted(set(old_i) | set(new_i)):
        if signature not in new_i:
            problems.append(f"{signature}: removed")
            continue
        if signature not in old_i:
            continue  # a new signature breaks no client
        for side in ("inputs", "outputs"):
            a, b = old_i[signature][side], new_i[signature][side]
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    problems.append(
                        f"{signature}.{side[:-1]} {key}: "
                        f"{_tensor(a.get(key))} -> {_tensor(b.get(key))}"
                    )
    return {"compatible": not problems, "differences": problems}


def _tensor(info: Optional[list]) -> str:
    if info is None:
        return "absent"
    dtype, shape = info
    return f"{dtype}[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _privacy(
    old: CheckedSpec, new: CheckedSpec, examples: Optional[int]
) -> Optional[dict[str, Any]]:
    a, b = old.training.privacy, new.training.privacy
    if a is None and b is None:
        return None
    keys = (
        "l2_norm_clip",
        "noise_multiplier",
        "target_epsilon",
        "num_microbatches",
        "implementation",
        "delta",
    )
    out: dict[str, Any] = {
        key: [None if a is None else getattr(a, key), None if b is None else getattr(b, key)]
        for key in keys
    }
    if examples is not None:
        from compiler.privacy.accounting import privacy_report

        def epsilon(spec: CheckedSpec) -> Optional[float]:
            if spec.training.privacy is None:
                return None
            value = privacy_report(spec, examples).epsilon
            return None if value == float("inf") else value

        out["epsilon"] = [epsilon(old), epsilon(new)]
        out["examples"] = examples
    return out


def diff_specs(
    old: Union[s.Spec, CheckedSpec],
    new: Union[s.Spec, CheckedSpec],
    *,
    old_name: str = "OLD",
    new_name: str = "NEW",
    examples: Optional[int] = None,
) -> SpecDiff:
    """Compare two resolved specs statically.

    Args:
        old, new: Resolved specs (`load_spec` or `load_revision`).
        old_name, new_name: How the report calls them.
        examples: A number of training examples, for the epsilon of DP specs.

    Raises:
        SpecError: a spec built in Python breaks a rule.
    """
    old, new = checked(old), checked(new)
    old_a, new_a = old.analysis, new.analysis
    a, b = flatten(to_data(old.spec)), flatten(to_data(new.spec))
    fields = []
    for key in sorted(set(a) | set(b), key=lambda k: (k.split(".")[0], k)):
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            kind = "added" if key not in a else "removed" if key not in b else "changed"
            fields.append({"path": key, "change": kind, "old": a.get(key), "new": b.get(key)})
    return SpecDiff(
        old=old_name,
        new=new_name,
        fields=fields,
        layers=_layer_rows(old, new, old_a, new_a),
        params={
            "old": old_a.total_params,
            "new": new_a.total_params,
            "delta": new_a.total_params - old_a.total_params,
        },
        checkpoint=_checkpoint(weights_of(old, old_a), weights_of(new, new_a)),
        serving=_serving(serving_interface(old, old_a), serving_interface(new, new_a)),
        privacy=_privacy(old, new, examples),
    )


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return (
        f"`{value}`" if not isinstance(value, (int,)) or isinstance(value, bool) else f"{value:,}"
    )


def render_markdown(diff: SpecDiff) -> str:
    """The report as Markdown, ready to paste as a pull-request comment."""
    lines = [f"### keraspec diff: `{diff.old}` → `{diff.new}`", ""]
    if diff.equivalent:
        lines.append("The specs are equivalent: they resolve to the same model and training.")
        return "\n".join(lines) + "\n"
    p = diff.params
    lines.append(f"**Parameters:** {p['old']:,} → {p['new']:,} ({p['delta']:+,})  ")
    ok = {True: "✅ compatible", False: "❌ incompatible"}
    lines.append(f"**Checkpoint:** {ok[diff.checkpoint['compatible']]}  ")
    lines.append(f"**Serving:** {ok[diff.serving['compatible']]}")
    lines.append("")
    lines += ["| field | change | old | new |", "| --- | --- | --- | --- |"]
    for f in diff.fields:
        lines.append(f"| `{f['path']}` | {f['change']} | {_value(f['old'])} | {_value(f['new'])} |")
    lines += [
        "",
        "| layer | type | status | params old | params new | delta |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in diff.layers:
        status = row["status"]
        if status == "renamed":
            status = f"renamed to `{row['renamed_to']}`"
        elif row["changes"]:
            status += ": " + ", ".join(
                f"{k} {_value(a)} → {_value(b)}" for k, (a, b) in row["changes"].items()
            )
        delta = row["params_new"] - row["params_old"]
        lines.append(
            f"| `{row['layer']}` | {row['type']} | {status} | {row['params_old']:,} "
            f"| {row['params_new']:,} | {delta:+,} |"
        )
    for title, part in (("Checkpoint", diff.checkpoint), ("Serving", diff.serving)):
        if part["differences"]:
            lines += ["", f"**{title} differences:**", ""]
            lines += [f"- {d}" for d in part["differences"]]
    if diff.privacy is not None:
        lines += ["", "| privacy | old | new |", "| --- | --- | --- |"]
        for key, value in diff.privacy.items():
            if key != "examples":
                lines.append(f"| {key} | {_value(value[0])} | {_value(value[1])} |")
        if "examples" in diff.privacy:
            lines.append(f"\n(epsilon for {diff.privacy['examples']:,} training examples)")
    return "\n".join(lines) + "\n"
