"""The spec language, version keraspec/v1, as typed pydantic models.

These models are the single source of truth: the published JSON Schema is generated from
them (`keraspec schema`), and the parser validates documents with them. Cross-field rules
(shapes, vocab sizes, DP constraints) live in `compiler.lang.checks`.

Field docstrings become the schema's descriptions, so editors show them on hover.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, create_model

from compiler.layers import Layer
from compiler.layers.base import (
    Identifier,
    Initializer,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Rate,
    StrictModel,
)

API_VERSION = "keraspec/v1"

ModelName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=64)]


# --------------------------------------------------------------------------------- input


class InputSpec(StrictModel):
    """The model's input: batches of integer token ids."""

    name: Identifier = Field(
        "tokens",
        description="Name of the input tensor (and of the serving signature's input).",
    )
    vocab_size: PositiveInt = Field(
        description="Number of distinct token ids; ids run from 0 to vocab_size - 1.",
    )
    batch_size: Optional[PositiveInt] = Field(
        None,
        description="Fixed batch size; required when any layer is stateful. null means variable.",
    )
    sequence_length: Optional[PositiveInt] = Field(
        None,
        description="Fixed sequence length; null means variable-length sequences.",
    )


# -------------------------------------------------------------------------------- layers
#
# Each layer type is a model in its own module of compiler.layers, with its behaviour.


class GraphModel(StrictModel):
    """An explicit graph of layers. Without `inputs` anywhere it is a plain chain."""

    layers: Annotated[list[Layer], Field(min_length=1, max_length=1000)]
    """The layers, in order; each takes the previous one's output unless it names its `inputs`."""
    output: Optional[Identifier] = Field(
        None,
        description=(
            "Name of the layer whose output is the model's (next-token logits); defaults to "
            "the last layer."
        ),
    )


# ----------------------------------------------------------------------------- templates


class LstmTextParams(StrictModel):
    """Parameters of the canonical two-LSTM text model (defaults: the reference's)."""

    vocab_size: PositiveInt = 20000
    """Distinct token ids (input.vocab_size and the output layer's units)."""
    embedding_dim: PositiveInt = 256
    """Size of each token's embedding vector."""
    rnn_units: PositiveInt = 256
    """Units of each of the two LSTMs."""
    dropout_rate: Rate = 0.2
    """Rate of the three dropout layers, in [0, 1)."""
    rnn_initializer: Initializer = "glorot_uniform"
    """Initializer of the LSTMs' input weights."""
    learning_rate: PositiveFloat = 0.01
    """RMSprop's learning rate."""
    batch_size: PositiveInt = 64
    """Examples per training step (and input.batch_size, fixed for stateful layers)."""
    sequence_length: PositiveInt = 100
    """Tokens per training window (DP: per record example)."""
    stateful: bool = Field(
        True,
        description="The LSTMs carry their state from one batch to the next (the reference's "
        "training); generation and export handle state either way.",
    )


class DpParams(StrictModel):
    """The differentially private optimizer's parameters, shared by the -dp templates."""

    l2_norm_clip: PositiveFloat = 3.0
    """Clip each example's (microbatch's) gradient to this L2 norm."""
    noise_multiplier: NonNegativeFloat = Field(
        1.1,
        description="1.1 gives epsilon 1.7 (delta records^-1.1) for 10 epochs of batch 64 over "
        "3,600 records; the reference's 0.1 gives no meaningful guarantee.",
    )
    num_microbatches: Optional[PositiveInt] = Field(
        None,
        description="null: one per example (per-example DP). The reference uses 1 (it clips "
        "the batch's mean gradient) with implementation standard.",
    )
    implementation: Literal["standard", "vectorized", "fast"] = "fast"
    """DP-SGD implementation: fast (keraspec's per-example step), standard or vectorized
    (tensorflow-privacy)."""


class LstmTextDpParams(LstmTextParams, DpParams):
    """lstm-text parameters plus those of the differentially private optimizer."""

    stateful: bool = Field(
        False,
        description="DP training runs the LSTMs stateless (no record may reach another "
        "batch's gradients through a carried state), so the template's are; true gives the "
        "reference's stateful layers (trained as stateless copies under DP).",
    )


class TransformerTextParams(StrictModel):
    """Parameters of the decoder-only transformer text model."""

    vocab_size: PositiveInt = 20000
    """Distinct token ids (input.vocab_size and the output layer's units)."""
    embedding_dim: PositiveInt = 256
    """Width of the token and position embeddings and of every block's output."""
    num_heads: PositiveInt = 4
    """Attention heads per block; must divide embedding_dim."""
    num_layers: PositiveInt = 2
    """Transformer blocks."""
    mlp_units: PositiveInt = 1024
    """Hidden units of each block's two-layer MLP."""
    dropout_rate: Rate = 0.1
    """Rate of the embedding, attention and MLP dropouts, in [0, 1)."""
    learning_rate: PositiveFloat = 0.001
    """Adam's learning rate."""
    batch_size: PositiveInt = 64
    """Examples per training step."""
    sequence_length: PositiveInt = 100
    """Tokens per training window (DP: per record example), and the positions the model
    can attend over (its position table and its serving cache)."""


class TransformerTextDpParams(TransformerTextParams, DpParams):
    """transformer-text parameters plus those of the differentially private optimizer."""


class LstmTextTemplate(StrictModel):
    """The canonical two-LSTM text model."""

    template: Literal["lstm-text"]
    """The template's name."""
    params: LstmTextParams = LstmTextParams()
    """The template's parameters; unset ones take their defaults."""


class LstmTextDpTemplate(StrictModel):
    """The canonical two-LSTM text model with a differentially private optimizer."""

    template: Literal["lstm-text-dp"]
    """The template's name."""
    params: LstmTextDpParams = LstmTextDpParams()
    """The template's parameters; unset ones take their defaults."""


class TransformerTextTemplate(StrictModel):
    """A decoder-only transformer: token and position embeddings, pre-norm blocks of causal
    attention and an MLP, dense logits; Adam."""

    template: Literal["transformer-text"]
    """The template's name."""
    params: TransformerTextParams = TransformerTextParams()
    """The template's parameters; unset ones take their defaults."""


class TransformerTextDpTemplate(StrictModel):
    """The decoder-only transformer with a differentially private optimizer."""

    template: Literal["transformer-text-dp"]
    """The template's name."""
    params: TransformerTextDpParams = TransformerTextDpParams()
    """The template's parameters; unset ones take their defaults."""


TemplateModel = Annotated[
    Union[LstmTextTemplate, LstmTextDpTemplate, TransformerTextTemplate, TransformerTextDpTemplate],
    Field(discriminator="template"),
]


# ------------------------------------------------------------------------------ training


class SparseCategoricalCrossentropy(StrictModel):
    """Next-token cross-entropy; the compiler makes it per-example for microbatched DP."""

    type: Literal["sparse_categorical_crossentropy"] = "sparse_categorical_crossentropy"
    """The loss: sparse categorical cross-entropy over the next token."""
    from_logits: bool = True
    """The model outputs logits (no softmax layer)."""


Metric = Literal[
    "accuracy",
    "sparse_categorical_accuracy",
    "sparse_top_k_categorical_accuracy",
    "sparse_categorical_crossentropy",
]


class RMSprop(StrictModel):
    keras_class: ClassVar[str] = "RMSprop"  # in tf_keras.optimizers.legacy

    type: Literal["rmsprop"]
    """The optimizer: tf_keras.optimizers.legacy.RMSprop."""
    learning_rate: PositiveFloat = 0.001
    """Step size."""
    rho: Annotated[float, Field(gt=0, lt=1)] = 0.9
    """Decay of the moving average of squared gradients."""
    momentum: NonNegativeFloat = 0.0
    """Momentum; 0 for none."""
    epsilon: PositiveFloat = 1e-7
    """Added to the denominator, for stability."""
    centered: bool = False
    """Normalise by the gradient's estimated variance, not its second moment."""


class Adam(StrictModel):
    keras_class: ClassVar[str] = "Adam"  # in tf_keras.optimizers.legacy

    type: Literal["adam"]
    """The optimizer: tf_keras.optimizers.legacy.Adam."""
    learning_rate: PositiveFloat = 0.001
    """Step size."""
    beta_1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """Decay of the first-moment estimate."""
    beta_2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    """Decay of the second-moment estimate."""
    epsilon: PositiveFloat = 1e-7
    """Added to the denominator, for stability."""
    amsgrad: bool = False
    """Use the AMSGrad variant (the maximum of past second moments)."""


class SGD(StrictModel):
    keras_class: ClassVar[str] = "SGD"  # in tf_keras.optimizers.legacy

    type: Literal["sgd"]
    """The optimizer: tf_keras.optimizers.legacy.SGD."""
    learning_rate: PositiveFloat = 0.01
    """Step size."""
    momentum: NonNegativeFloat = 0.0
    """Momentum; 0 for plain SGD."""
    nesterov: bool = False
    """Use Nesterov momentum."""


class Adagrad(StrictModel):
    keras_class: ClassVar[str] = "Adagrad"  # in tf_keras.optimizers.legacy

    type: Literal["adagrad"]
    """The optimizer: tf_keras.optimizers.legacy.Adagrad."""
    learning_rate: PositiveFloat = 0.001
    """Step size."""
    initial_accumulator_value: NonNegativeFloat = 0.1
    """Starting value of the per-parameter sums of squared gradients."""
    epsilon: PositiveFloat = 1e-7
    """Added to the denominator, for stability."""


Optimizer = Annotated[Union[RMSprop, Adam, SGD, Adagrad], Field(discriminator="type")]
# Each optimizer's model, by its `type` (what compiling, importing and pruning look up).
OPTIMIZER_MODELS: dict[str, Any] = {
    typing.get_args(m.model_fields["type"].annotation)[0]: m for m in (RMSprop, Adam, SGD, Adagrad)
}


class PrivacySpec(StrictModel):
    """DP-SGD settings (tensorflow-privacy). Give noise_multiplier or target_epsilon."""

    l2_norm_clip: PositiveFloat = Field(
        description="Clip each microbatch's gradient to this L2 norm.",
    )
    noise_multiplier: Optional[NonNegativeFloat] = Field(
        None,
        description="Gaussian noise standard deviation, as a multiple of l2_norm_clip.",
    )
    target_epsilon: Optional[PositiveFloat] = Field(
        None,
        description=(
            "Instead of noise_multiplier: the epsilon to reach; the noise is derived from " "it."
        ),
    )
    delta: Optional[Annotated[float, Field(gt=0, lt=1)]] = Field(
        None,
        description=(
            "Delta of the (epsilon, delta) guarantee; null means records^-1.1, below "
            "1 / records (a delta of 1 / records allows publishing one whole record)."
        ),
    )
    accountant: Literal["pld", "rdp"] = Field(
        "pld",
        description=(
            "The privacy accountant (dp_accounting): pld (privacy loss distributions, the "
            "tighter bound) or rdp (Renyi DP)."
        ),
    )
    sampling: Optional[Literal["poisson", "shuffle"]] = Field(
        None,
        description=(
            "How each step's batch is drawn. poisson: every record independently with "
            "probability batch_size / records, from a secret key (batch_size is the expected "
            "batch); the guarantee is amplified by the sampling. shuffle: a secret "
            "permutation per epoch cut into full batches; no amplification (each record is "
            "in one step per epoch). null: poisson with implementation fast, shuffle "
            "otherwise (tensorflow-privacy's optimizers need full batches)."
        ),
    )
    num_microbatches: Optional[PositiveInt] = Field(
        None,
        description="Microbatches per batch; null means one per example (= batch size).",
    )
    implementation: Literal["standard", "vectorized", "fast"] = Field(
        "standard",
        description=(
            "standard and vectorized: tensorflow-privacy's make_keras_optimizer_class and its "
            "vectorized variant; fast: keraspec's per-example clipping from one backward pass "
            "(one microbatch per example)."
        ),
    )


class EarlyStopping(StrictModel):
    monitor: Literal["loss", "val_loss", "accuracy", "val_accuracy"] = "loss"
    """The metric watched at the end of each epoch (val_ ones need validation_split > 0)."""
    patience: Annotated[int, Field(ge=0)] = 5
    """Epochs without an improvement of at least min_delta before training stops."""
    min_delta: NonNegativeFloat = 0.001
    """The smallest change of the monitored value that counts as an improvement."""
    restore_best_weights: bool = False
    """When stopping, go back to the weights of the best epoch."""


class CharTokenizer(StrictModel):
    """One token per Unicode character seen in the corpus."""

    type: Literal["char"]
    """The tokenizer: char."""


class SentencePieceTokenizer(StrictModel):
    type: Literal["sentencepiece"]
    """The tokenizer: sentencepiece (trained on the corpus when the run starts)."""
    vocab_size: PositiveInt = Field(description="Must equal input.vocab_size.")
    character_coverage: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of the corpus's characters the model covers (SentencePiece `character_coverage`)."""
    model_type: Literal["unigram", "bpe", "char", "word"] = "unigram"
    """SentencePiece's algorithm: unigram (the reference's), bpe, char or word."""


Tokenizer = Annotated[Union[CharTokenizer, SentencePieceTokenizer], Field(discriminator="type")]


class DistributionSpec(StrictModel):
    """Training under a tf.distribute strategy: the same spec on more devices or machines."""

    strategy: Literal["one_device", "mirrored", "multi_worker"] = Field(
        description=(
            "one_device: one device, as without this block; mirrored: the devices of one "
            "machine (MirroredStrategy); multi_worker: several processes or machines "
            "(MultiWorkerMirroredStrategy), the cluster from TF_CONFIG or `keraspec train "
            "--cluster --task`."
        ),
    )
    workers: Annotated[int, Field(ge=1, le=1024)] = Field(
        1,
        description="multi_worker: the number of worker processes the cluster lists.",
    )
    devices_per_worker: Annotated[int, Field(ge=1, le=64)] = Field(
        1,
        description=(
            "Replicas in each worker: its first N GPUs or, on a machine without GPUs, N "
            "logical CPU devices."
        ),
    )
    peer_timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        300,
        description=(
            "multi_worker: how long a worker waits for the others in one exchange before it "
            "stops with an error (a lost worker)."
        ),
    )

    @property
    def replicas(self) -> int:
        return self.workers * self.devices_per_worker


class TrainingSpec(StrictModel):
    batch_size: Optional[PositiveInt] = Field(
        None,
        description="Examples per step; defaults to input.batch_size, else 64.",
    )
    sequence_length: Optional[PositiveInt] = Field(
        None,
        description="Tokens per training window; defaults to input.sequence_length, else 100.",
    )
    epochs: PositiveInt = 10
    """Passes over the training examples (a resumed run may be given more)."""
    loss: SparseCategoricalCrossentropy = SparseCategoricalCrossentropy()
    """The loss."""
    metrics: list[Metric] = ["accuracy"]
    """Metrics reported with the loss (Keras metric names)."""
    optimizer: Optimizer = RMSprop(type="rmsprop")
    """The optimizer and its settings; under privacy it is wrapped in DP-SGD."""
    privacy: Optional[PrivacySpec] = Field(None, description="Train with DP-SGD when present.")
    distribution: Optional[DistributionSpec] = Field(
        None, description="Train under tf.distribute; batch_size is the global batch."
    )
    early_stopping: Optional[EarlyStopping] = None
    """Stop when a metric stops improving; null: train all epochs."""
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Share of records held out for validation (and evaluate's baseline), in [0, 1)."""
    tokenizer: Tokenizer = CharTokenizer(type="char")
    """How text becomes token ids: char or sentencepiece."""
    examples: Literal["aligned", "windows"] = "aligned"
    """How records become training examples (DP runs always take one record per example).
    aligned: whole records packed from a record's start, each example from zero state, as
    generation starts; windows: the record stream cut anywhere, the reference's way, kept
    for comparison."""
    seed: Optional[int] = None
    """Seed of weights, dropout, the split and the example order; null: random, recorded in the
    run."""


# -------------------------------------------------------------------------------- export


SignatureName = Literal["serving_default", "step", "generate", "generate_text"]
ALL_SIGNATURES: tuple[str, ...] = typing.get_args(SignatureName)
GENERATION_SIGNATURES = ("step", "generate", "generate_text")


def signatures_to_export(spec: "Spec", *, text_in_graph: bool) -> list[str]:
    """The signatures an export writes: the spec's list, or every one that applies
    (generate_text only when the tokenizer can run in the graph; the generation signatures
    only for a causal model)."""
    if spec.export.signatures is not None:
        return list(spec.export.signatures)
    causal = all(layer.is_causal() for layer in spec.model.layers)
    return [
        n
        for n in ALL_SIGNATURES
        if (n != "generate_text" or text_in_graph) and (causal or n not in GENERATION_SIGNATURES)
    ]


class ExportLimits(StrictModel):
    """Bounds every serving request is checked against before anything is allocated.

    TF Serving runs every model of a deployment in one process: one unbounded request would
    take all of them down. A request over a limit fails at once with InvalidArgument naming
    the limit.
    """

    max_batch: PositiveInt = Field(256, description="Rows per request, in every signature.")
    max_new_tokens: PositiveInt = Field(
        1024, description="Tokens generate and generate_text may sample per row."
    )
    max_prompt_length: PositiveInt = Field(
        1024,
        description="Tokens per row of a token input (serving_default, step, generate).",
    )
    max_prompt_chars: PositiveInt = Field(
        4096, description="Characters per prompt of generate_text."
    )


class ExportSpec(StrictModel):
    """What `keraspec export` writes: a SavedModel for TF Serving."""

    version: PositiveInt = Field(
        1,
        description=(
            "The first numeric version directory TF Serving loads (BASE/NAME/VERSION); later "
            "exports take the next free number."
        ),
    )
    signatures: Optional[Annotated[list[SignatureName], Field(min_length=1)]] = Field(
        None,
        description=(
            "Serving signatures to write; must include serving_default. null: every one that "
            "applies (serving_default, step, generate, and generate_text when the tokenizer "
            "can run in the graph, i.e. char)."
        ),
    )
    limits: ExportLimits = Field(
        ExportLimits(),
        description="Request bounds baked into the export's signatures.",
    )


# ---------------------------------------------------------------------------------- data


FieldKind = Literal["integer", "decimal", "date", "datetime", "time", "categorical", "text"]


class FieldSpec(StrictModel):
    """One column of delimited records: its name and the rule a generated value must pass."""

    name: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="Column name, used in reports."
    )
    kind: Optional[FieldKind] = Field(
        None,
        description=(
            "integer, decimal, date, datetime or time (in `format`), categorical (one of "
            "`values`) or text. null: learned from the training records (non-DP runs), or "
            "no rule (DP runs)."
        ),
    )
    values: Optional[Annotated[list[str], Field(min_length=1)]] = Field(
        None, description="categorical: the allowed values."
    )
    min: Optional[Union[float, str]] = Field(
        None,
        description="Smallest allowed value: a number (integer, decimal) or a value in "
        "`format` (date, datetime, time).",
    )
    max: Optional[Union[float, str]] = Field(None, description="Largest allowed value, like `min`.")
    format: Optional[str] = Field(
        None, description="date, datetime, time: the strftime format, e.g. %Y-%m-%d."
    )
    decimals: Optional[Annotated[int, Field(ge=0, le=64)]] = Field(
        None, description="decimal: the most digits after the decimal point."
    )
    max_length: Optional[PositiveInt] = Field(None, description="text: the most characters.")
    nullable: Optional[bool] = Field(
        None,
        description="Whether the value may be empty. null: learned with the kind, else false.",
    )


class DataSpec(StrictModel):
    """What the training records look like. Optional: without it, a non-DP run learns its
    columns from the records; a DP run, whose records the guarantee covers, checks generated
    records' field count only unless the columns are declared here."""

    format: Literal["csv", "text"] = Field(
        "csv", description="csv: delimited records; text: free text, no columns."
    )
    delimiter: Optional[Annotated[str, Field(min_length=1, max_length=1)]] = Field(
        None, description="Field delimiter; null: detected from the records."
    )
    quotechar: Annotated[str, Field(min_length=1, max_length=1)] = Field(
        '"', description="Quote character of fields holding the delimiter."
    )
    header: Optional[bool] = Field(
        None,
        description="Whether the file's first line is a header, not a record (it is then not "
        "trained on). null: detected (non-DP runs), none (DP runs).",
    )
    fields: Optional[Annotated[list[FieldSpec], Field(min_length=1)]] = Field(
        None, description="The columns, in order; null: learned (non-DP) or none (DP)."
    )


# ---------------------------------------------------------------------------------- spec


class SpecBase(StrictModel):
    apiVersion: Literal["keraspec/v1"] = Field(description="Version of the spec language.")
    name: ModelName = Field(
        description="Model name; becomes the TF Serving model name, so letters, digits, _ and -.",
    )
    description: Optional[str] = None
    """Free text about the model, kept in its artifacts."""


class Spec(SpecBase):
    """A resolved spec: template applied, defaults filled, ready to compile."""

    input: InputSpec
    """The model's input: vocabulary size, batch size, sequence length."""
    model: GraphModel
    """The layers (a chain, or a graph with `inputs`)."""
    training: TrainingSpec = TrainingSpec()
    """Loss, metrics, optimizer, privacy, distribution, batch, epochs, tokenizer."""
    export: ExportSpec = ExportSpec()
    """What keraspec export writes for TF Serving."""
    data: Optional[DataSpec] = Field(
        None, description="The records' format and columns, for validators and reports."
    )


# ------------------------------------------------------------------- template documents
#
# A spec that uses a template may give any subset of input and training: what it gives is
# merged over what the template produces, then the merged whole is validated as a `Spec`.
# The schema of those partial sections is derived from the full models ("patches"), so
# there is still one source of truth.


def _patch_type(tp: Any) -> Any:
    metadata: tuple[Any, ...] = ()
    if typing.get_origin(tp) is Annotated:
        tp, *rest = typing.get_args(tp)
        metadata = tuple(m for m in rest if not hasattr(m, "discriminator"))
    if typing.get_origin(tp) is Union:
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _patch_type(members[0])
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return _patch_union(members)
    if isinstance(tp, type) and issubclass(tp, StrictModel):
        return _patch_model(tp)
    return Annotated[(tp, *metadata)] if metadata else tp


def _patch_fields(models: list[type[BaseModel]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for model in models:
        for name, field in model.model_fields.items():
            if name in fields:
                continue
            # Constraints (gt, lt, pattern) live in the field's metadata, not its annotation.
            annotation = field.annotation
            if field.metadata:
                annotation = Annotated[(annotation, *field.metadata)]
            fields[name] = (
                Optional[_patch_type(annotation)],
                Field(None, description=field.description),
            )
    return fields


def _patch_model(model: type[BaseModel]) -> type[BaseModel]:
    patch = create_model(  # type: ignore[call-overload]
        f"{model.__name__}Patch",
        __base__=StrictModel,
        __doc__=f"Any subset of {model.__name__}, merged over the template's.",
        **_patch_fields([model]),
    )
    patch.__patched__ = (model,)  # its fields' docstrings are the model's
    return patch


def _patch_union(members: list[type[BaseModel]]) -> type[BaseModel]:
    tags = tuple(t for m in members for t in typing.get_args(m.model_fields["type"].annotation))
    fields = _patch_fields(members)
    fields["type"] = (  # type: ignore[valid-type]
        Optional[Literal[tags]],
        Field(
            None,
            description=f"One of {', '.join(tags)}; a new type replaces the template's "
            "whole block.",
        ),
    )
    patch = create_model(  # type: ignore[call-overload]
        "".join(m.__name__ for m in members) + "Patch",
        __base__=StrictModel,
        __doc__="Fields of the chosen type, merged over the template's (a new type replaces).",
        **fields,
    )
    patch.__patched__ = tuple(members)
    return patch


def distribution_summary(spec: "Spec") -> Optional[dict[str, Any]]:
    """A resolved spec's distribution: its settings, replicas and per-replica batch."""
    d = spec.training.distribution
    if d is None:
        return None
    return {
        **d.model_dump(),
        "replicas": d.replicas,
        "global_batch": spec.training.batch_size,
        "replica_batch": spec.training.batch_size // d.replicas,
        "stateful": any(layer.is_stateful for layer in spec.model.layers),
    }


class TemplateDocument(SpecBase):
    """A spec built from a template, with optional partial input and training sections."""

    model: TemplateModel
    """The template and its params."""
    input: Optional[_patch_model(InputSpec)] = None  # type: ignore[valid-type]
    """Any input fields, merged over the template's."""
    training: Optional[_patch_model(TrainingSpec)] = None  # type: ignore[valid-type]
    """Any training fields, merged over the template's."""
    export: Optional[ExportSpec] = None
    """What keraspec export writes for TF Serving."""
    data: Optional[DataSpec] = None
    """The records' format and columns, for validators and reports."""


def _document_kind(value: Any) -> str:
    model = value.get("model") if isinstance(value, dict) else getattr(value, "model", None)
    if isinstance(model, dict):
        return "by-template" if "template" in model else "by-layers"
    return "by-template" if hasattr(model, "template") else "by-layers"


# What a spec file may say. Tags appear in error locations and must name no data key.
SpecDocument = Annotated[
    Union[Annotated[TemplateDocument, Tag("by-template")], Annotated[Spec, Tag("by-layers")]],
    Discriminator(_document_kind),
]
DOCUMENT = TypeAdapter(SpecDocument)
