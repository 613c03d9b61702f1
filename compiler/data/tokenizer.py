"""Tokenizers: records to token ids and back, as the spec's `training.tokenizer` declares.

Both kinds reserve the same two special ids, so the data pipeline and the samplers do not
care which one a run used:

- 0 `<pad>`: fills a record-aligned example up to the sequence length; masked out of the
  loss.
- 1 `<eor>`: ends a record. Generation stops when the model emits it, and a record-aligned
  example starts with it (the state "a record begins here").

`char` builds its vocabulary from the corpus (one id per distinct character);
`sentencepiece` trains a SentencePiece model on the corpus with the spec's settings. The
vocabulary is saved in the run directory (`tokenizer.json`, plus `tokenizer.model` for
SentencePiece) and loaded back by `load_tokenizer`. No TensorFlow here.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence, Union

import numpy as np

from compiler.diagnostics import DataError, Diagnostic, SpecError
from compiler.files import write_atomic
from compiler.lang.checked import CheckedSpec, positionless
from compiler.lang.spec import Spec

PAD, EOR = "<pad>", "<eor>"
PAD_ID, EOR_ID = 0, 1
# SentencePiece only: the id of a piece it never saw (the char tokenizer has none).
UNK_ID = 2
CONFIG_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"


class CharTokenizer:
    """One id per character seen in the corpus, after the two special ids."""

    kind = "char"
    pad_id, eor_id = PAD_ID, EOR_ID

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.vocab = [PAD, EOR, *self.chars]
        self._ids = {c: i for i, c in enumerate(self.vocab) if i >= 2}
        # Sorted code points and their ids, for vectorised encoding of whole records.
        points = np.array([ord(c) for c in self.chars], dtype=np.int64)
        order = np.argsort(points)
        self._points = points[order]
        self._point_ids = (order + 2).astype(np.int32)

    @classmethod
    def fit(cls, records: Iterable[str]) -> "CharTokenizer":
        return cls(sorted(set().union(*map(set, records))))

    @property
    def size(self) -> int:
        """Number of ids in use (the model's vocab_size must be at least this)."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, as int32.

        Raises:
            KeyError: naming the first character that is not in the vocabulary.
        """
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        where = np.searchsorted(self._points, points)
        where = np.minimum(where, max(len(self._points) - 1, 0))
        known = self._points[where] == points if len(self._points) else points < 0
        if not known.all():
            bad = chr(int(points[np.argmin(known)]))
            raise KeyError(bad)
        return self._point_ids[where]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special ids and ids beyond the vocabulary are dropped."""
        vocab = self.vocab
        return "".join(vocab[i] for i in map(int, ids) if 2 <= i < len(vocab))

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "pad_id": PAD_ID, "eor_id": EOR_ID, "vocab": self.vocab}

    def files(self) -> dict[str, bytes]:
        return {CONFIG_FILE: _json_bytes(self.config())}


class SentencePieceTokenizer:
    """A SentencePiece model trained on the corpus (the reference's tokenizer)."""

    kind = "sentencepiece"
    pad_id, eor_id = PAD_ID, EOR_ID

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.model_proto = model_proto
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def fit(cls, records: Sequence[str], settings: Any) -> "SentencePieceTokenizer":
        """Train on `records` with a spec's `SentencePieceTokenizer` settings.

        Raises:
            ValueError: SentencePiece's own message when the settings cannot be met.
        """
        import io

        import sentencepiece

        longest = max(len(r.encode("utf-8")) for r in records)
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(records),
                model_writer=model,
                vocab_size=settings.vocab_size,
                character_coverage=settings.character_coverage,
                model_type=settings.model_type,
                # The reference's choice: a small corpus yields a smaller vocabulary rather
                # than an error; the model's vocab_size only bounds it.
                hard_vocab_limit=False,
                pad_id=PAD_ID,
                pad_piece=PAD,
                eos_id=EOR_ID,
                eos_piece=EOR,
                unk_id=UNK_ID,
                bos_id=-1,
                # Records are generated back as they were written: no normalisation, and
                # whitespace (meaningful in CSV) kept as it is.
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                max_sentence_length=max(longest + 1, 4192),
                num_threads=1,  # deterministic vocabulary for a given corpus
                minloglevel=2,
            )
        except RuntimeError as e:
            raise ValueError(str(e).strip()) from e
        return cls(model.getvalue())

    @property
    def size(self) -> int:
        return int(self._sp.get_piece_size())

    def unknown(self, char: str) -> bool:
        """Whether a character is outside the vocabulary (SentencePiece writes a space as
        U+2581)."""
        return bool((self.encode(char) == UNK_ID).any())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        size = self.size
        return self._sp.decode([i for i in map(int, ids) if 2 < i < size])

    def config(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "pad_id": PAD_ID,
            "eor_id": EOR_ID,
            "model": SENTENCEPIECE_FILE,
            "size": self.size,
        }

    def files(self) -> dict[str, bytes]:
        return {SENTENCEPIECE_FILE: self.model_proto, CONFIG_FILE: _json_bytes(self.config())}


Tokenizer = CharTokenizer | SentencePieceTokenizer


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def fit_tokenizer(spec: Union[Spec, CheckedSpec], records: Sequence[str]) -> Tokenizer:
    """Build the tokenizer a spec declares from a corpus, and check it fits the model.

    Raises:
        SpecError: the corpus needs more token ids than the spec's input.vocab_size (named
            at the spec's line), or SentencePiece cannot meet the spec's settings.
    """
    source = spec.source if isinstance(spec, CheckedSpec) else positionless(spec)
    settings = spec.training.tokenizer
    vocab_size = spec.input.vocab_size
    if settings.type == "char":
        tokenizer: Tokenizer = CharTokenizer.fit(records)
        if tokenizer.size > vocab_size:
            raise SpecError(
                [
                    source.diagnostic(
                        ("input", "vocab_size"),
                        "vocab_too_small",
                        f"expected a corpus needing at most input.vocab_size = {vocab_size} "
                        f"token ids, received one with {len(tokenizer.chars)} distinct "
                        f"characters + 2 special tokens ({PAD}, {EOR}) = {tokenizer.size}; "
                        f"raise vocab_size to at least {tokenizer.size}",
                    )
                ]
            )
        return tokenizer
    try:
        return SentencePieceTokenizer.fit(records, settings)
    except ValueError as e:
        raise SpecError(
            [
                source.diagnostic(
                    ("training", "tokenizer", "vocab_size"),
                    "sentencepiece",
                    f"expected settings SentencePiece can train on this corpus, received "
                    f"vocab_size {settings.vocab_size}, character_coverage "
                    f"{settings.character_coverage}: {_first_line(str(e))}",
                )
            ]
        ) from e


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def save_tokenizer(tokenizer: Tokenizer, directory: str) -> None:
    """Write the tokenizer's files into `directory`, each atomically."""
    for name, data in tokenizer.files().items():
        write_atomic(os.path.join(directory, name), data)


def load_tokenizer(directory: str) -> Tokenizer:
    """Load the tokenizer saved in a run directory.

    Raises:
        DataError: the files are missing or unreadable.
    """
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if config["type"] == "char":
            return CharTokenizer(config["vocab"][2:])
        with open(os.path.join(directory, config["model"]), "rb") as f:
            return SentencePieceTokenizer(f.read())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "tokenizer_unreadable",
                    f"expected a tokenizer saved by keraspec train, received: {e}",
                    file=path,
                )
            ]
        ) from e


def encode_prompt(tokenizer: Tokenizer, text: str, *, name: str = "prompt") -> np.ndarray:
    """Encode a user's prompt, naming a character the vocabulary lacks.

    Raises:
        DataError: a character of the prompt was never seen in the training corpus.
    """
    try:
        ids = tokenizer.encode(text)
        if isinstance(tokenizer, SentencePieceTokenizer) and (ids == UNK_ID).any():
            # SentencePiece maps what it never saw to <unk>, which generation would drop
            # silently: the same error as the char tokenizer's, naming the character.
            raise KeyError(next(c for c in text if tokenizer.unknown(c)))
        return ids
    except KeyError as e:
        char = e.args[0]
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "unknown_character",
                    f"expected characters of the training corpus, received {char!r} "
                    f"(U+{ord(char):04X}) at position {text.index(char)}, which the "
                    "tokenizer has never seen",
                    file=f"<{name}>",
                )
            ]
        ) from None
