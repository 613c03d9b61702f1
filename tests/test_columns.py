"""Column rules of delimited records: learned, declared, and checked (no TensorFlow)."""

from __future__ import annotations

import json

import pytest

import compiler
from compiler.data.columns import (
    Column,
    Validators,
    infer_column,
    learn_validators,
    load_validators,
    split_record,
)
from compiler.diagnostics import DataError

TRANSACTIONS = [
    "2025-07-17,books,42.09,Oslo,contactless,Y",
    "2025-06-05,travel,540.58,,online,Y",
    "2025-04-22,electronics,282.76,Madrid,contactless,Y",
    "2025-06-08,restaurant,37.15,,online,N",
    "2025-02-07,travel,319.26,Vienna,contactless,Y",
] * 8


def test_each_kind_is_learned_with_its_rule():
    assert infer_column("n", ["1", "5", "12"]).kind == "integer"
    assert infer_column("n", ["1.5", "2", "3.25"]).kind == "decimal"
    assert infer_column("n", ["1.5", "2", "3.25"]).decimals == 2
    # Leading zeros are a format (zip codes), not a number.
    assert infer_column("zip", ["02134", "10001", "94105"]).kind != "integer"
    date = infer_column("d", ["2025-01-02", "2025-03-04", "2025-12-31"])
    assert (date.kind, date.format) == ("date", "%Y-%m-%d")
    assert infer_column("d", ["13/01/2025", "02/02/2025"]).format == "%d/%m/%Y"
    stamp = infer_column("t", ["2025-01-02T10:00:00", "2025-01-03T11:30:00"])
    assert (stamp.kind, stamp.format) == ("datetime", "%Y-%m-%dT%H:%M:%S")
    assert infer_column("t", ["10:00", "23:59"]).kind == "time"
    category = infer_column("c", ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "c"])
    assert category.kind == "categorical" and category.values == ("a", "b", "c")
    text = infer_column("name", [f"name {i}" for i in range(50)])
    assert text.kind == "text" and text.max_length >= len("name 49")
    assert infer_column("c", ["x", "", "y", "x", "y", "x"] * 3).nullable


def test_values_outside_the_rules_fail_with_their_reason():
    v = learn_validators(TRANSACTIONS, private=False)
    assert (v.source, v.fields, v.delimiter, v.header) == ("learned", 6, ",", False)
    assert v.is_valid("2025-05-01,books,50.00,Oslo,card,Y") is False  # 'card' never seen
    assert v.is_valid("2025-05-01,books,50.00,,online,N")
    reasons = {
        "205-02-09,books,1.00,Oslo,online,Y": ("field_1", "type"),  # a three-digit year
        "2025-06-31,books,1.00,Oslo,online,Y": ("field_1", "type"),  # no such day
        "2025-6-09,books,1.00,Oslo,online,Y": ("field_1", "type"),  # not the layout
        "2031-06-09,books,1.00,Oslo,online,Y": ("field_1", "range"),
        "2025-06-09,boctary,1.00,Oslo,online,Y": ("field_2", "category"),
        "2025-06-09,books,1.001,Oslo,online,Y": ("field_3", "decimals"),
        "2025-06-09,books,99999,Oslo,online,Y": ("field_3", "range"),
        "2025-06-09,books,-1,Oslo,online,Y": ("field_3", "range"),  # never negative
        "2025-06-09,books,1x,Oslo,online,Y": ("field_3", "type"),
        "2025-06-09,books,1.00,Oslo,online,": ("field_6", "empty"),
    }
    for record, (column, reason) in reasons.items():
        (failure,) = v.failures(record)
        assert (failure.column, failure.reason) == (column, reason), record
    (short,) = v.failures("2025-06-09,books")
    assert short.column is None and short.value == "2 fields"


def test_quoted_fields_with_delimiters_inside_are_one_field():
    records = [f'{i},"Washington, DC",{"x" if i % 2 else "y"}' for i in range(30)]
    records += [f"{i},Lyon,x" for i in range(30, 60)]
    v = learn_validators(records, private=False)
    assert v.fields == 3
    assert split_record('7,"Washington, DC",x', ",") == ["7", "Washington, DC", "x"]
    assert v.is_valid('7,"Washington, DC",x')
    assert not v.is_valid("7,Washington, DC,x")  # unquoted: four fields
    assert "Washington, DC" in v.columns[1].values


def test_a_header_line_names_the_columns_and_is_not_a_value():
    v = learn_validators(["day,kind,amount,city,method,ok"] + TRANSACTIONS, private=False)
    assert v.header
    assert [c.name for c in v.columns[:3]] == ["day", "kind", "amount"]
    assert v.columns[0].kind == "date" and v.columns[2].kind == "decimal"
    assert not learn_validators(TRANSACTIONS, private=False).header


def test_a_private_run_keeps_no_value_of_its_records():
    v = learn_validators(["day,kind,amount,city,method,ok"] + TRANSACTIONS, private=True)
    assert (v.source, v.fields, v.columns) == ("field_count", 6, None)
    saved = json.dumps(v.to_dict())
    for value in ("books", "Oslo", "2025", "42.09", "day", "kind"):
        assert value not in saved
    assert v.is_valid("anything,at,all,with,six,fields")


def _data_spec(data: str, dp: bool = False) -> str:
    template = "lstm-text-dp" if dp else "lstm-text"
    return f"apiVersion: keraspec/v1\nname: t\nmodel: {{template: {template}}}\ndata:\n{data}"


def test_declared_columns_are_the_validators_even_for_a_private_run():
    spec = compiler.load_spec(
        _data_spec(
            "  header: true\n  fields:\n"
            "    - {name: day, kind: date, format: '%Y-%m-%d', min: '2025-01-01'}\n"
            "    - {name: kind, kind: categorical, values: [books, travel]}\n"
            "    - {name: amount, kind: decimal, min: 0, max: 1000, decimals: 2}\n",
            dp=True,
        )
    )
    v = learn_validators(["2025-01-01,books,1.00"], private=True, declared=spec.data)
    assert (v.source, v.header, v.names) == ("declared", True, ["day", "kind", "amount"])
    assert v.is_valid("2025-03-01,travel,999.99")
    assert [f.reason for f in v.failures("2024-12-31,food,1000.5")] == [
        "range",
        "category",
        "range",
    ]
    assert "declared" in v.describe_source()


@pytest.mark.parametrize(
    "data, path, expected",
    [
        (
            "  fields:\n    - {name: c, kind: categorical}\n",
            "data.fields[0].values",
            "expected the allowed values",
        ),
        (
            "  fields:\n    - {name: d, kind: date}\n",
            "data.fields[0].format",
            "expected the strftime format",
        ),
        (
            "  fields:\n    - {name: d, kind: date, format: '%Y', min: '2020', max: '2019'}\n",
            "data.fields[0].max",
            "expected max >= min",
        ),
        (
            "  fields:\n    - {name: n, kind: integer, values: [a]}\n",
            "data.fields[0].values",
            "expected no values for a integer field",
        ),
        (
            "  fields:\n    - {name: a}\n    - {name: a}\n",
            "data.fields[1].name",
            "expected unique field names",
        ),
        (
            "  fields:\n    - {name: d, kind: date, format: '%Y-%m-%d', min: 'soon'}\n",
            "data.fields[0].min",
            "expected a value in format",
        ),
        ("  delimiter: '\"'\n", "data.delimiter", "other than the quote character"),
        ("  kind: csv\n", "data.kind", "unknown key"),
    ],
)
def test_a_bad_data_block_is_a_located_error(data, path, expected):
    result = compiler.validate(_data_spec(data))
    assert not result.ok
    found = [d for d in result.diagnostics if d.path == path]
    assert found and expected in found[0].message and found[0].line is not None, [
        (d.path, d.message) for d in result.diagnostics
    ]


def test_validators_round_trip_and_a_corrupt_file_is_named(tmp_path):
    v = learn_validators(TRANSACTIONS, private=False)
    (tmp_path / "validators.json").write_text(json.dumps(v.to_dict()))
    assert load_validators(str(tmp_path)) == v
    assert load_validators(str(tmp_path / "none")) is None
    old = load_validators(str(tmp_path / "none"), {"delimiter": ";", "fields": 4})
    assert old == Validators("field_count", ";", '"', 4)
    (tmp_path / "validators.json").write_text("[1, 2]")
    with pytest.raises(DataError) as e:
        load_validators(str(tmp_path))
    assert str(tmp_path / "validators.json") in str(e.value)


def test_a_column_describes_its_rule():
    assert Column("c", "categorical", values=("a", "b", "c", "d")).describe() == (
        "categorical of 4 (a, b, c, ...)"
    )
    assert "[0, 10]" in Column("n", "integer", minimum=0.0, maximum=10.0).describe()


def test_fields_without_a_kind_take_learned_rules_or_none_in_a_private_run():
    names = ["day", "kind", "amount", "city", "method", "ok"]
    spec = compiler.load_spec(
        _data_spec(
            "  fields:\n"
            + "".join(f"    - {{name: {n}}}\n" for n in names[:5])
            + "    - {name: ok, kind: categorical, values: ['Y']}\n"
        )
    )
    v = learn_validators(TRANSACTIONS, private=False, declared=spec.data)
    assert (v.source, v.names) == ("declared+learned", names)
    assert [c.kind for c in v.columns] == [
        "date",
        "categorical",
        "decimal",
        "categorical",
        "categorical",
        "categorical",
    ]
    assert [f.column for f in v.failures("2025-06-31,books,1.00,Oslo,online,N")] == ["day", "ok"]
    private = learn_validators(TRANSACTIONS, private=True, declared=spec.data)
    assert private.source == "declared" and private.names == names
    assert [c.kind for c in private.columns[:5]] == ["text"] * 5
    saved = json.dumps(private.to_dict())
    assert "books" not in saved and "Oslo" not in saved and "2025" not in saved
    assert private.is_valid("x,y,z,w,v,Y") and not private.is_valid("x,y,z,w,v,N")
