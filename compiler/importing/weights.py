"""An imported model's weights as a run directory that export, generate, evaluate and
inspect accept (`keraspec import --run-dir`).

The spec is imported first (so a refused layer stops everything before TensorFlow runs);
keraspec builds the spec's model and loads the file's weights into it by layer: a `.h5`
file and a SavedModel through tf-keras' own weight loading (arrays and variables only),
a `.keras` archive from its weights file, layer by layer by name. The run's report says
that the model was imported, from which file, and that no training, and so no DP, happened
in keraspec.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import zipfile
from typing import Any, Optional, Union

from compiler.diagnostics import DataError, Diagnostic, RunError
from compiler.importing.formats import KerasFile, read_keras_file, refusal

IMPORTED_NOTE = (
    "imported: no training, and so no DP, happened in keraspec; the weights are the file's"
)


@dataclasses.dataclass(frozen=True)
class ImportedRun:
    """What `import_run` wrote."""

    run_dir: str
    spec: Any
    source: str
    sha256: str
    format: str
    parameters: int


def import_run(
    path: Union[str, os.PathLike[str]],
    run_dir: Union[str, os.PathLike[str]],
    *,
    tokenizer: Optional[Union[str, os.PathLike[str]]] = None,
    data: Optional[Union[str, os.PathLike[str]]] = None,
    name: Optional[str] = None,
    templates: bool = True,
) -> ImportedRun:
    """Import the Keras model at `path` with its weights, as a new run directory.

    Args:
        path: A `.keras` archive, a tf-keras `.h5` file or a SavedModel (a model's JSON
            holds no weights).
        run_dir: The run directory to create (it must not hold a run).
        tokenizer: keraspec's tokenizer.json for the model's token ids; or
        data: a corpus to build the spec's tokenizer from (and its column rules).
        name, templates: As `import_document`.

    Raises:
        SpecError: the model cannot be imported, or its file holds no weights.
        DataError: neither a tokenizer nor a corpus, or a tokenizer larger than the
            model's vocabulary.
        RunError: the run directory is unusable or already holds a run.
    """
    from compiler.importing import document_of
    from compiler.lang.parse import load_spec
    from compiler.lang.render import dump_json
    from compiler.training.rundir import RunDir

    path = os.fspath(path)
    source = read_keras_file(path)
    if source.format == "json":
        raise refusal(
            path,
            "",
            "expected a model file with weights for --run-dir (.keras, .h5 or a SavedModel), "
            "received a model's JSON, which holds its architecture only",
            "import_no_weights",
        )
    spec = load_spec(dump_json(document_of(source, name=name, templates=templates)))
    run = RunDir(os.fspath(run_dir))
    run.check_usable()
    if run.exists():
        raise RunError(
            [
                Diagnostic(
                    "error",
                    "run_dir_exists",
                    "expected a new run directory for an imported model, received one "
                    "holding a run",
                    "",
                    run.path,
                )
            ]
        )
    fitted, corpus = _tokenizer(spec, tokenizer, data)
    model = _model_with_weights(spec, source)
    _write_run(run, spec, source, fitted, corpus, model)
    return ImportedRun(
        run.path, spec, path, source.sha256, source.format, int(model.count_params())
    )


def _tokenizer(spec: Any, tokenizer: Any, data: Any) -> tuple[Any, Any]:
    from compiler.data.columns import declared_header
    from compiler.data.corpus import read_corpus
    from compiler.data.tokenizer import fit_tokenizer, load_tokenizer

    corpus = None
    if data is not None:
        corpus = read_corpus(data, header=declared_header(spec))
    if tokenizer is not None:
        with tempfile.TemporaryDirectory(prefix="keraspec-tokenizer-") as scratch:
            with open(os.fspath(tokenizer), "rb") as f:
                content = f.read()
            with open(os.path.join(scratch, "tokenizer.json"), "wb") as f:
                f.write(content)
            fitted = load_tokenizer(scratch)
    elif corpus is not None:
        fitted = fit_tokenizer(spec, corpus.records)
    else:
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "import_tokenizer",
                    "expected --tokenizer FILE (keraspec's tokenizer.json for the model's "
                    "token ids) or --data CORPUS (to build one): a Keras model holds no "
                    "tokenizer, and a run needs one to read and write records",
                    "",
                    "<arguments>",
                )
            ]
        )
    if fitted.size > spec.input.vocab_size:
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "import_tokenizer_size",
                    f"expected a tokenizer of at most {spec.input.vocab_size} tokens (the "
                    f"model's vocabulary), received {fitted.size}",
                    "",
                    os.fspath(tokenizer or data),
                )
            ]
        )
    return fitted, corpus


def _model_with_weights(spec: Any, source: KerasFile) -> Any:
    from compiler.build import compile_spec

    model = compile_spec(spec).model
    try:
        if source.format == "h5":
            model.load_weights(source.path)
        elif source.format == "savedmodel":
            model.load_weights(os.path.join(source.path, "variables", "variables")).expect_partial()
        else:
            _load_archive_weights(model, source.path, _archive_keys(source))
    except (ValueError, KeyError, OSError) as e:
        raise refusal(
            source.path,
            "",
            f"expected weights that fit the imported spec's model, received: "
            f"{str(e).splitlines()[0][:300]}",
            "import_weights",
        ) from None
    return model


def _archive_keys(source: KerasFile) -> dict[str, str]:
    """Each layer's group in a `.keras` weights file, by the layer's name.

    The archive names a model's layers by class, in order: lstm, lstm_1, ... (whatever
    the layers' own names), as Keras' saving library walks them.
    """
    from compiler.layers.keras_config import snake

    counts: dict[str, int] = {}
    keys = {}
    for entry in (source.model.get("config") or {}).get("layers", []):
        base = snake(str(entry.get("class_name", "")).split(">")[-1])
        n = counts.get(base, 0)
        counts[base] = n + 1
        name = (entry.get("config") or {}).get("name", entry.get("name"))
        keys[name] = base if n == 0 else f"{base}_{n}"
    return keys


def _load_archive_weights(model: Any, path: str, keys: dict[str, str]) -> None:
    """A `.keras` archive's model.weights.h5 into `model`, layer by layer."""
    import h5py
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="keraspec-weights-") as scratch:
        with zipfile.ZipFile(path) as archive:
            archive.extract("model.weights.h5", scratch)
        with h5py.File(os.path.join(scratch, "model.weights.h5"), "r") as f:
            groups = f["layers"] if "layers" in f else f
            for layer in model.layers:
                if not layer.weights:
                    continue
                key = keys.get(layer.name, layer.name)
                if key not in groups:
                    raise KeyError(f"no weights for layer {layer.name!r} ({key}) in the archive")
                arrays = [np.asarray(v) for v in _variables(groups[key])]
                layer.set_weights(arrays)


def _variables(group: Any) -> list[Any]:
    """A layer's arrays in creation order: its own vars/0, vars/1, ..., then its sublayers'."""
    import h5py

    own, nested = [], []
    for key in group:
        item = group[key]
        if key == "vars" and isinstance(item, h5py.Group):
            own = [item[k][()] for k in sorted(item, key=lambda k: int(re.sub(r"\D", "", k) or 0))]
        elif isinstance(item, h5py.Group):
            nested.append((key, item))
    out = list(own)
    for _, item in sorted(nested):
        out.extend(_variables(item))
    return out


def _write_run(
    run: Any, spec: Any, source: KerasFile, tokenizer: Any, corpus: Any, model: Any
) -> None:
    from compiler.data.corpus import record_shape
    from compiler.tf import tensorflow
    from compiler.training.report import ImportedReport
    from compiler.training.run import run_files
    from compiler.training.rundir import BEST, LATEST
    from compiler.training.runfiles import CheckpointState, RunIdentity

    tf = tensorflow()
    stateful = any(layer.is_stateful for layer in spec.model.layers)
    identity = RunIdentity(
        name=spec.name,
        data=os.path.abspath(source.path),
        data_sha256=corpus.sha256 if corpus is not None else source.sha256,
        seed=0,
        record_shape=record_shape(corpus.records) if corpus is not None else None,
        unit="window" if stateful else "aligned",
        imported={"from": os.path.abspath(source.path), "sha256": source.sha256},
        spec={},  # the spec's fingerprint: `RunDir.start` fills it in
    )
    with run.writer():
        run.start(spec.spec, identity, run_files(spec, tokenizer, corpus))
        with run.new_checkpoint(0, CheckpointState()) as prefix:
            tf.train.Checkpoint(model=model).write(prefix)
        run.point(BEST, 0)
        run.point(LATEST, 0)
        run.write_report(
            ImportedReport(
                name=spec.name,
                imported={
                    "from": os.path.abspath(source.path),
                    "format": source.format,
                    "sha256": source.sha256,
                },
                notes=[IMPORTED_NOTE],
            )
        )
