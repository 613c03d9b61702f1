"""The automaton of constrained generation against the validators it is compiled from (no
TensorFlow): what it accepts passes them, what they reject it never writes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from test_columns import TRANSACTIONS

from compiler.data.automaton import Automaton, compile_automaton, token_strings
from compiler.data.columns import Column, Validators, learn_validators
from compiler.data.tokenizer import EOR_ID, PAD_ID, CharTokenizer, SentencePieceTokenizer

# Every rule of the evaluate and column tests, broken once.
REJECTED = [
    "205-02-09,books,1.00,Oslo,online,Y",
    "2025-06-31,books,1.00,Oslo,online,Y",
    "2025-6-09,books,1.00,Oslo,online,Y",
    "2031-06-09,books,1.00,Oslo,online,Y",
    "2025-06-09,boctary,1.00,Oslo,online,Y",
    "2025-06-09,books,1.001,Oslo,online,Y",
    "2025-06-09,books,99999,Oslo,online,Y",
    "2025-06-09,books,-1,Oslo,online,Y",
    "2025-06-09,books,1x,Oslo,online,Y",
    "2025-06-09,books,1.00,Oslo,online,",
    "2025-06-09,books",
    "2025-06-09,books,1.00,Oslo,online,Y,extra",
    "",
]
ACCEPTED = [
    *TRANSACTIONS[:5],
    "2025-05-01,books,50.00,,online,N",
    "2025-03-31,travel,7,Oslo,online,N",
]


def accepts(automaton: Automaton, tokenizer, record: str) -> bool:
    """Whether the automaton lets `record` be written and then ended with <eor>."""
    try:
        ids = tokenizer.encode(record)
    except KeyError:
        return False
    state = automaton.walk(ids)
    return state is not None and automaton.table[state, EOR_ID] >= 0


def random_records(automaton: Automaton, tokenizer, n: int, seed: int = 0) -> list[str]:
    """Records written by choosing uniformly among the allowed tokens at every step: the
    harshest sampler (no model to keep it near the data)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        state, ids = automaton.start, []
        for _ in range(2000):
            allowed = np.flatnonzero(automaton.table[state] >= 0)
            assert len(allowed), "a kept state always allows some token"
            token = int(rng.choice(allowed))
            if token == EOR_ID:
                break
            ids.append(token)
            state = int(automaton.table[state, token])
        else:
            pytest.fail("a record that never ends")
        out.append(tokenizer.decode(ids))
    return out


def char_automaton(records: list[str], validators: Validators, extra: str = "") -> tuple:
    tokenizer = CharTokenizer.fit([*records, extra])
    return compile_automaton(validators, tokenizer, tokenizer.size + 3), tokenizer


def test_it_accepts_what_the_validators_accept_and_rejects_what_they_reject():
    v = learn_validators(TRANSACTIONS, private=False)
    automaton, tokenizer = char_automaton(TRANSACTIONS, v, extra="0123456789-x")
    for record in ACCEPTED:
        assert v.is_valid(record) and accepts(automaton, tokenizer, record), record
    for record in REJECTED:
        assert not v.is_valid(record) and not accepts(automaton, tokenizer, record), record
    assert automaton.resampled == ()  # every rule of this table is exact


def test_uniformly_random_paths_through_it_are_all_valid_records():
    v = learn_validators(TRANSACTIONS, private=False)
    automaton, tokenizer = char_automaton(TRANSACTIONS, v, extra="0123456789-")
    records = random_records(automaton, tokenizer, 300)
    assert all(v.is_valid(r) for r in records), [r for r in records if not v.is_valid(r)][:3]
    # Not one fixed record: the automaton allows the whole range.
    assert len(set(records)) > 250


@pytest.mark.parametrize(
    "column,values",
    [
        (Column("n", "integer", minimum=-37.0, maximum=1250.0), range(-2000, 2001)),
        (Column("n", "integer", minimum=5.0, maximum=95.0, nullable=True), range(-10, 120)),
        (
            Column("x", "decimal", minimum=-1.5, maximum=12.25, decimals=2),
            [i / 100 for i in range(-2000, 2001)],
        ),
        (
            Column("x", "decimal", minimum=0.975399, maximum=77.6773, decimals=8),
            [i / 1000 for i in range(0, 80000, 7)],
        ),
    ],
)
def test_numbers_are_exact_to_the_range_digits_and_decimals(column, values):
    v = Validators("declared", ",", '"', 1, False, (column,))
    tokenizer = CharTokenizer(list("-.0123456789"))
    automaton = compile_automaton(v, tokenizer, tokenizer.size)
    forms = set()
    for value in values:
        if isinstance(value, float):
            forms.update({f"{value:.0f}", f"{value:.1f}", f"{value:.2f}", f"{value:.3f}"})
        else:
            forms.add(str(value))
    checked = 0
    for form in sorted(forms):
        assert accepts(automaton, tokenizer, form) == v.is_valid(form), form
        checked += v.is_valid(form)
    assert checked > 50  # the range was really explored on both sides of each bound
    assert all(v.is_valid(r) for r in random_records(automaton, tokenizer, 200))


def test_dates_are_exact_days_of_their_range_and_wide_ranges_are_resampled():
    day = Column(
        "d",
        "date",
        minimum="2024-02-20",
        maximum="2024-03-05",
        format="%Y-%m-%d",
        layouts=("9999-99-99",),
    )
    v = Validators("declared", ",", '"', 1, False, (day,))
    tokenizer = CharTokenizer(list("-0123456789"))
    automaton = compile_automaton(v, tokenizer, tokenizer.size)
    start = dt.date(2024, 2, 1)
    for i in range(60):
        text = (start + dt.timedelta(days=i)).isoformat()
        assert accepts(automaton, tokenizer, text) == v.is_valid(text), text
    assert accepts(automaton, tokenizer, "2024-02-29")  # a leap day
    for bad in ("2024-02-30", "2024-02-31", "2024-13-01", "2024-2-21"):
        assert not accepts(automaton, tokenizer, bad)
    assert automaton.resampled == ()
    # Seconds over a month: too many values to list; the layout is exact, the calendar and
    # range are checked when the record ends.
    stamp = Column(
        "t",
        "datetime",
        minimum="2024-01-01 00:00:00",
        maximum="2024-02-01 00:00:00",
        format="%Y-%m-%d %H:%M:%S",
        layouts=("9999-99-99 99:99:99",),
    )
    wide = Validators("declared", ",", '"', 1, False, (stamp,))
    automaton = compile_automaton(wide, CharTokenizer(list(" -:0123456789")), 13)
    assert automaton.resampled == ("t: calendar validity and range",)
    assert not accepts(automaton, CharTokenizer(list(" -:0123456789")), "2024-01-01 24:00:00")


def test_quoted_fields_may_hold_the_delimiter_and_doubled_quotes():
    records = [f'{i % 7},"Washington, DC",x' for i in range(30)]
    records += [f'{i % 7},"The ""Big"" Apple",y' for i in range(30)]
    records += [f"{i % 7},Lyon,x" for i in range(30)]
    v = learn_validators(records, private=False)
    automaton, tokenizer = char_automaton(records, v)
    assert accepts(automaton, tokenizer, '3,"Washington, DC",x')
    assert accepts(automaton, tokenizer, '3,"The ""Big"" Apple",y')
    assert not accepts(automaton, tokenizer, "3,Washington, DC,x")  # four fields
    assert not accepts(automaton, tokenizer, '3,"Washington, DC,x')  # never closed
    assert not accepts(automaton, tokenizer, '3,"Lyon"x,x')  # text after the closing quote
    assert not accepts(automaton, tokenizer, '"3",Lyon,x')  # a number is never quoted
    records_out = random_records(automaton, tokenizer, 200)
    assert all(v.is_valid(r) for r in records_out)
    assert any('"' in r for r in records_out)


def test_sentencepiece_pieces_across_delimiters_are_allowed_exactly_when_valid():
    rng = np.random.default_rng(0)
    cities = ["Oslo", "Madrid", "Vienna", "Lyon"]
    records = [
        f"{rng.integers(1, 40)},{cities[i % 4]},{'yes' if i % 3 else 'no'}" for i in range(400)
    ]
    tokenizer = SentencePieceTokenizer.fit(
        records,
        type(
            "Settings", (), {"vocab_size": 80, "character_coverage": 1.0, "model_type": "unigram"}
        ),
    )
    strings = token_strings(tokenizer)
    spanning = [i for i, s in enumerate(strings) if s and "," in s and len(s) > 1]
    assert spanning, "the corpus should give pieces that hold a delimiter"
    v = learn_validators(records, private=False)
    automaton = compile_automaton(v, tokenizer, tokenizer.size)
    # A piece holding the delimiter is allowed where its whole text keeps the record valid.
    allowed_somewhere = [i for i in spanning if (automaton.table[:, i] >= 0).any()]
    assert allowed_somewhere
    for token in allowed_somewhere:
        for state in np.flatnonzero(automaton.table[:, token] >= 0)[:5]:
            assert automaton.table[state, token] >= 0
    for record in records[:50]:
        assert accepts(automaton, tokenizer, record)
    assert not accepts(automaton, tokenizer, "12,Oslo,maybe")
    assert not accepts(automaton, tokenizer, "12,Paris,yes")
    out = random_records(automaton, tokenizer, 200)
    assert all(v.is_valid(r) for r in out), [r for r in out if not v.is_valid(r)][:3]
    assert automaton.table[:, PAD_ID].max() < 0  # padding is never allowed


def test_a_dp_run_automaton_holds_no_value_of_its_records():
    planted = "Qzyxwv"
    base = [f"{i % 9},{['Oslo', 'Lyon'][i % 2]},{i % 3}" for i in range(60)]
    with_plant = [*base[:30], *(f"{i % 9},{planted},1" for i in range(30))]
    same_chars = "".join(sorted(set("".join(with_plant))))
    digests = {}
    for name, records in (("base", base), ("planted", with_plant)):
        tokenizer = CharTokenizer(list(same_chars))  # the same vocabulary for both
        for private in (True, False):
            v = learn_validators(records, private=private)
            digests[name, private] = compile_automaton(v, tokenizer, tokenizer.size + 2).digest
            if not private and name == "planted":
                learned = compile_automaton(v, tokenizer, tokenizer.size + 2)
                assert accepts(learned, tokenizer, f"3,{planted},1")
    # The DP automaton is the same whether or not the planted value was in the records;
    # the learned one is not.
    assert digests["base", True] == digests["planted", True]
    assert digests["base", False] != digests["planted", False]


def test_validators_no_record_can_pass_are_an_error():
    v = Validators("declared", ",", '"', 1, False, (Column("c", "categorical", values=("zzz",)),))
    with pytest.raises(ValueError, match="no record"):
        compile_automaton(v, CharTokenizer(list("abc")), 5)


def test_a_huge_value_set_gives_up_exactness_to_fit_the_table(monkeypatch):
    import compiler.data.automaton as automaton_module

    values = tuple(f"v{i:05d}" for i in range(3000))
    v = Validators("declared", ",", '"', 1, False, (Column("c", "categorical", values=values),))
    tokenizer = CharTokenizer(list("v0123456789"))
    monkeypatch.setattr(automaton_module, "MAX_TABLE_ENTRIES", 20_000)
    automaton = compile_automaton(v, tokenizer, tokenizer.size)
    assert automaton.table.size <= 20_000
    assert automaton.resampled == ("c: the set of values (too many for the table)",)
    assert accepts(automaton, tokenizer, "v01234")
