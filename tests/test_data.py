"""Corpus reading, tokenizers and example cutting (no TensorFlow)."""

import numpy as np
import pytest

import compiler
from compiler.data.corpus import read_corpus
from compiler.data.dataset import (
    aligned_examples,
    default_max_new_tokens,
    epoch_order,
    prepare,
    record_examples,
    windows,
)
from compiler.data.tokenizer import (
    EOR_ID,
    PAD_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    fit_tokenizer,
    load_tokenizer,
    save_tokenizer,
)

from training_fixtures import load, write_corpus, write_spec


def test_corpus_records_are_lines_without_endings(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffa,1\r\n\nb,2\n   \nc,3".encode())
    corpus = read_corpus(path)
    assert corpus.records == ["a,1", "b,2", "c,3"]
    assert corpus.blank_lines == 2
    assert corpus.lines == 5


@pytest.mark.parametrize(
    "content, code, fragment",
    [
        (None, "data_missing", "no such file"),
        (b"", "data_empty", "an empty file"),
        (b"\n \n", "data_empty", "whitespace only"),
        (b"ok\n\x89PNG\x00\x00", "data_binary", "byte offset 7"),
        (b"caf\xc3\xa9\nna\xefve\n", "data_encoding", "byte offset 8"),
    ],
)
def test_unusable_corpus_is_named_with_its_position(tmp_path, content, code, fragment):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(compiler.DataError) as e:
        read_corpus(path)
    (d,) = e.value.diagnostics
    assert (d.code, d.file) == (code, str(path))
    assert fragment in d.message
    if code == "data_encoding":
        assert (d.line, d.column) == (2, 3)


def test_char_tokenizer_round_trip_and_specials():
    tok = CharTokenizer.fit(["hello", "wörld"])
    assert tok.vocab[:2] == ["<pad>", "<eor>"]
    ids = tok.encode("hello wörld"[:5])
    assert ids.dtype == np.int32 and ids.min() >= 2
    assert tok.decode(ids) == "hello"
    assert tok.decode([EOR_ID, *tok.encode("wörld"), PAD_ID]) == "wörld"
    with pytest.raises(KeyError) as e:
        tok.encode("hex")
    assert e.value.args[0] == "x"


def test_char_vocabulary_larger_than_the_spec_is_an_error_at_its_line(tmp_path):
    spec = load(write_spec(tmp_path / "s.yaml", vocab=5))
    with pytest.raises(compiler.SpecError) as e:
        fit_tokenizer(spec, ["abcdef"])
    (d,) = e.value.diagnostics
    assert d.code == "vocab_too_small"
    assert (d.file, d.line) == (str(tmp_path / "s.yaml"), 5)  # model.params.vocab_size
    assert "6 distinct characters + 2 special tokens" in d.message and "= 8" in d.message


def test_char_vocabulary_smaller_than_the_spec_is_fine(tmp_path):
    spec = load(write_spec(tmp_path / "s.yaml", vocab=40))
    assert fit_tokenizer(spec, ["abc"]).size == 5


def test_sentencepiece_trains_on_the_corpus_with_reserved_ids(tmp_path):
    corpus = read_corpus(write_corpus(tmp_path / "c.txt", records=400))
    extra = "  tokenizer: {type: sentencepiece, vocab_size: 40}\n"
    spec = load(write_spec(tmp_path / "s.yaml", vocab=40, extra=extra))
    tok = fit_tokenizer(spec, corpus.records)
    assert isinstance(tok, SentencePieceTokenizer)
    assert 2 < tok.size <= 40
    for record in corpus.records[:50]:
        ids = tok.encode(record)
        assert PAD_ID not in ids and EOR_ID not in ids
        assert tok.decode(ids) == record  # identity normalisation: records come back as written
    save_tokenizer(tok, str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert list(again.encode(corpus.records[0])) == list(tok.encode(corpus.records[0]))


def test_a_sentencepiece_prompt_with_an_unseen_character_is_an_error_naming_it(tmp_path):
    from compiler.data.tokenizer import encode_prompt

    corpus = read_corpus(write_corpus(tmp_path / "c.txt", records=400))
    extra = "  tokenizer: {type: sentencepiece, vocab_size: 40}\n"
    tok = fit_tokenizer(
        load(write_spec(tmp_path / "s.yaml", vocab=40, extra=extra)), corpus.records
    )
    assert tok.decode(encode_prompt(tok, "apple,")) == "apple,"  # no stray leading space
    with pytest.raises(compiler.DataError) as e:
        encode_prompt(tok, "apple,Z")  # Z never occurs in the corpus
    (d,) = e.value.diagnostics
    assert "'Z' (U+005A) at position 6" in d.message and d.file == "<prompt>"
    char = CharTokenizer.fit(corpus.records)
    with pytest.raises(compiler.DataError) as same:
        encode_prompt(char, "apple,Z")
    assert "'Z' (U+005A) at position 6" in same.value.diagnostics[0].message


def test_sentencepiece_settings_it_cannot_meet_name_the_spec_line(tmp_path):
    extra = "  tokenizer: {type: sentencepiece, vocab_size: 4}\n"
    spec = load(write_spec(tmp_path / "s.yaml", vocab=4, extra=extra))
    with pytest.raises(compiler.SpecError) as e:
        fit_tokenizer(spec, ["abcdefghij klmnop"] * 5)
    (d,) = e.value.diagnostics
    assert d.code == "sentencepiece" and d.path == "training.tokenizer.vocab_size"
    assert d.line == 10


def _records(lengths):
    return [np.arange(10, 10 + n, dtype=np.int32) for n in lengths]


def test_windows_cut_the_record_stream_shifted_by_one():
    ex = windows(_records([3, 4, 2]), 4)  # stream of 3+1+4+1+2+1 = 12 tokens -> 2 windows of 5
    stream = np.array([10, 11, 12, 1, 10, 11, 12, 13, 1, 10, 11, 12])
    assert len(ex) == 2
    assert ex.inputs.tolist() == [stream[0:4].tolist(), stream[5:9].tolist()]
    assert ex.targets.tolist() == [stream[1:5].tolist(), stream[6:10].tolist()]
    assert ex.weights is None


def test_a_record_example_holds_exactly_one_record():
    records = [np.array([5, 6, 7]), np.array([8] * 20), np.array([9])]
    ex, truncated = record_examples(records, 6)
    assert truncated == 1
    for record, inputs, targets, weights in zip(records, ex.inputs, ex.targets, ex.weights):
        full = np.concatenate(([inputs[0]], targets))
        assert full[0] == EOR_ID
        body = full[1:]
        real = body[body != PAD_ID]
        # Only this record's tokens, then <eor> if it fits; padding after, never another record.
        assert set(real.tolist()) <= set(record.tolist()) | {EOR_ID}
        assert (real[:-1] != EOR_ID).all()
        assert real[: len(record)].tolist() == record[: len(real)].tolist()
        assert ((targets == PAD_ID) == (weights == 0)).all()
        # The weights make the mean over all positions the mean over real tokens.
        assert weights.sum() == pytest.approx(len(targets))


def test_prepare_splits_records_not_examples_and_checks_sizes():
    records = _records([5] * 100)
    data = prepare(
        records,
        unit="record",
        batch_size=8,
        sequence_length=8,
        validation_split=0.2,
        seed=1,
        data_name="c.txt",
    )
    assert (data.records, data.validation_records) == (80, 20)
    assert len(data.train) == 80 and len(data.validation) == 20
    with pytest.raises(compiler.DataError) as e:
        prepare(
            records[:5],
            unit="record",
            batch_size=8,
            sequence_length=8,
            validation_split=0,
            seed=1,
            data_name="c.txt",
        )
    assert "at least one training batch of 8 records" in e.value.diagnostics[0].message
    with pytest.raises(compiler.DataError) as e:
        prepare(
            records[:10],
            unit="window",
            batch_size=8,
            sequence_length=8,
            validation_split=0,
            seed=1,
            data_name="c.txt",
        )
    message = e.value.diagnostics[0].message
    assert "batch of 8 windows of 9 tokens (= 72 tokens), received 60 tokens (6 windows)" in message
    with pytest.raises(compiler.DataError) as e:
        prepare(
            records,
            unit="record",
            batch_size=8,
            sequence_length=8,
            validation_split=0.05,
            seed=1,
            data_name="c.txt",
        )
    assert e.value.diagnostics[0].path == "training.validation_split"


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = epoch_order(50, 7, 0), epoch_order(50, 7, 0)
    assert sorted(a.tolist()) == list(range(50))
    assert (a == b).all()
    assert (a != epoch_order(50, 7, 1)).any()
    assert (a != epoch_order(50, 8, 0)).any()


def test_aligned_examples_start_at_a_record_and_train_every_token_once():
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 15, size=200)] + [45, 3, 70]  # two too long
    records = [np.arange(2, 2 + n, dtype=np.int32) % 50 + 2 for n in lengths]
    examples = aligned_examples(records, sequence_length=20)
    inputs, targets, weights = examples.inputs, examples.targets, examples.weights
    assert inputs.shape[1] == targets.shape[1] == 20
    # Every target token of every record (and each record's <eor>) is trained exactly once,
    # in order: the weighted targets, read example by example, are the record stream.
    trained = targets[weights > 0]
    stream = np.concatenate([np.append(r, EOR_ID) for r in records])
    assert trained.tolist() == stream.tolist()
    # Padding, and nothing else, weighs 0; the weights average 1 over the examples.
    assert ((weights > 0) == (targets != PAD_ID)).all()
    assert weights.mean() == pytest.approx(1.0)
    # An example starts with <eor> before a record's first token, unless it continues a
    # record longer than an example: 47 tokens make 2 continuations, 72 make 3.
    starts = inputs[:, 0] == EOR_ID
    assert (~starts).sum() == 5 and (inputs[~starts, 0] != PAD_ID).all()
    # A record that fits is never split: each example's weighted targets are whole records.
    for row, weight in zip(targets[starts], weights[starts]):
        kept = row[weight > 0]
        if kept[-1] == EOR_ID and len(kept) < 20:
            assert len(np.flatnonzero(kept == EOR_ID)) >= 1


def test_default_generation_length_comes_from_the_longest_record(tmp_path):
    spec = load(write_spec(tmp_path / "s.yaml"))
    assert default_max_new_tokens(spec, 100) == 100 + 25 + 4
    assert default_max_new_tokens(spec, 5000) == spec.export.limits.max_new_tokens
    # A run from before the longest record was kept: twice the sequence length.
    assert default_max_new_tokens(spec, None) == 2 * spec.training.sequence_length


def test_aligned_examples_of_a_recurrent_model_hold_its_longest_record(tmp_path):
    from compiler.data.dataset import MAX_ALIGNED_LENGTH, example_length
    from compiler.lang.checked import spec_of

    from training_fixtures import transformer_spec_text

    lstm = spec_of(load(write_spec(tmp_path / "lstm.yaml", length=12)))
    short = [np.arange(5)] * 10
    long = short + [np.arange(40)]
    assert example_length(lstm, "aligned", short) == 12  # every record fits already
    assert example_length(lstm, "aligned", long) == 41  # <eor>, 40 tokens, <eor> = 42 = 41 + 1
    assert example_length(lstm, "aligned", [np.arange(5000)]) == MAX_ALIGNED_LENGTH
    # DP examples (one record each) and windows keep the spec's length; so does a model
    # whose positions are bounded by a table.
    assert example_length(lstm, "record", long) == 12
    assert example_length(lstm, "window", long) == 12
    (tmp_path / "t.yaml").write_text(transformer_spec_text(length=16), encoding="utf-8")
    transformer = spec_of(load(tmp_path / "t.yaml"))
    assert example_length(transformer, "aligned", long) == 16
    examples = aligned_examples(long, example_length(lstm, "aligned", long))
    assert (examples.inputs[:, 0] == EOR_ID).all()  # no record is cut: all start a record
