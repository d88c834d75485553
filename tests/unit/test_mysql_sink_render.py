"""The MySQL sink renders its multi-row statements itself: values must be escaped exactly as the driver does."""

from __future__ import annotations

import pytest
from pymysql.converters import escape_string
from sqlalchemy.dialects.mysql import insert

from agents.mysql_sink import (ROUND_TRIP_BYTES_MAX, STATEMENT_BYTES_MAX, MultiRowStatement, _literal,
                               _transfer_upsert, _wallet_upsert, join_round_trips)
from readside.readmodel import ledger_entries, transfers, wallets


@pytest.mark.parametrize("value", ["plain", "it's", 'say "hi"', "back\\slash", "nl\nand\rcr", "nul\x00", "ctrl-z\x1a",
                                   "50% off", "ünïcødé", "'); DROP TABLE wallets; --"])
def test_string_literal_is_escaped_like_the_driver(value: str) -> None:
    assert _literal(value) == "'" + escape_string(value) + "'"


def test_int_and_none_literals() -> None:
    assert (_literal(-42), _literal(0), _literal(None), _literal(2 ** 62)) == ("-42", "0", "NULL", str(2 ** 62))


def test_other_types_are_refused_rather_than_guessed() -> None:
    with pytest.raises(TypeError):
        _literal(1.5)


def test_upserts_have_no_bound_parameter_outside_values() -> None:
    # A placeholder in ON DUPLICATE KEY UPDATE could not be rendered per row (the bug this replaced).
    MultiRowStatement(_wallet_upsert(), wallets)
    MultiRowStatement(_transfer_upsert(), transfers)


def test_rows_are_split_into_statements_below_the_size_bound() -> None:
    statement = MultiRowStatement(insert(ledger_entries).prefix_with("IGNORE"), ledger_entries)
    row = {column: 1 for column in statement.columns} | {"reference": "x" * 1000}
    rendered = statement.render([row] * 10_000)
    assert len(rendered) > 1
    assert all(len(sql) < STATEMENT_BYTES_MAX + 2_000 for sql in rendered)
    assert sum(sql.count("),(") + 1 for sql in rendered) == 10_000
    assert rendered[0].startswith("INSERT IGNORE INTO ledger_entries (")


@pytest.mark.parametrize("reference", ["plain", "it's", "back\\slash", "nul\x00", "50% off", "ünï"])
def test_rendered_rows_escape_every_string_like_the_driver(reference: str) -> None:
    statement = MultiRowStatement(insert(ledger_entries).prefix_with("IGNORE"), ledger_entries)
    row = {column: 7 for column in statement.columns} | {"reference": reference, "hold_id": None}
    (sql,) = statement.render([row])
    assert "'" + escape_string(reference) + "'" in sql
    assert ",NULL," in sql


TRICKY = ["plain", "it's", 'say "hi"', "back\\slash", "nl\nand\rcr", "nul\x00", "ctrl-z\x1a", "50% off", "%s %d",
          "ünïcødé", "'); DROP TABLE wallets; --", ""]


@pytest.mark.parametrize("tricky", TRICKY)
def test_column_at_a_time_rendering_equals_value_by_value_rendering(tricky: str) -> None:
    statement = MultiRowStatement(insert(ledger_entries).prefix_with("IGNORE"), ledger_entries)
    rows = [{column.name: (None if column.nullable and n % 2 else n if column.type.python_type is int
                           else f"{column.name}{n}") for column in ledger_entries.columns} for n in range(50)]
    rows[7] |= {"reference": tricky, "hold_id": tricky, "wallet_id": tricky}
    values = [tuple(row[column] for column in statement.columns) for row in rows]
    assert statement.render(rows) == statement._render_value_by_value(values)


def test_a_str_in_an_integer_column_is_rendered_as_a_quoted_literal_not_as_sql() -> None:
    statement = MultiRowStatement(insert(ledger_entries), ledger_entries)
    row = {column: 1 for column in statement.columns} | {"version": "1); DROP TABLE wallets; --"}
    (sql,) = statement.render([row])
    assert "'1); DROP TABLE wallets; --'" in sql


def test_a_batch_travels_in_few_round_trips_and_its_last_statement_is_the_commit() -> None:
    statements = ["INSERT a", "INSERT " + "b" * (ROUND_TRIP_BYTES_MAX - 10), "INSERT c"]
    texts = join_round_trips(statements)
    assert texts == ["INSERT a", statements[1], "INSERT c;COMMIT"]
    assert join_round_trips(["INSERT a", "INSERT b"]) == ["INSERT a;INSERT b;COMMIT"]
    assert all(len(text) <= ROUND_TRIP_BYTES_MAX for text in texts)
