"""The MySQL sink renders its multi-row statements itself: every value through the driver's own escaping, for
the session the writer pins; and the errors of a write are told apart (store fault, refused data, bug).
The real server's side of it (both sql_modes, hostile texts) is tests/integration/test_mysql_sink_text.py."""

from __future__ import annotations

import pymysql
import pytest
from pymysql.converters import escape_item, escape_string
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.exc import OperationalError as SqlAlchemyOperationalError

from agents import redis_sink
from agents.mysql_sink import (_DRIVER_ESCAPED, SESSION_CHARSET, STATEMENT_BYTES_MAX, MultiRowStatement, MySqlWriter,
                               _insert_once, _literal, _transfer_upsert, _wallet_upsert, store_error)
from agents.projection import StoreRefused
from readside.errors import StoreUnavailable
from readside.readmodel import ledger_entries, transfers, wallets

HOSTILE = ["plain", "it's", 'say "hi"', "back\\slash", "\\'", "\\", "'", "''", "nl\nand\rcr", "nul\x00", "ctrl-z\x1a",
           "tab\tbs\b", "50% off", "%s %d %(x)s", "ünïcødé", "line\u2028sep\u2029para", "emoji \U0001F4B8\U0001F600",
           "yen \u00a5 won \u20a9 fullwidth \uff07 \uff3c", "'); DROP TABLE wallets; --",
           "x\\', 1); UPDATE wallets SET balance_minor = 999 WHERE wallet_id = 'victim'; -- ", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_string_literal_is_the_drivers_escaping(value: str) -> None:
    assert _literal(value) == escape_item(value, SESSION_CHARSET) == "'" + escape_string(value) + "'"


def test_int_and_none_literals() -> None:
    assert (_literal(-42), _literal(0), _literal(None), _literal(2 ** 62)) == ("-42", "0", "NULL", str(2 ** 62))


@pytest.mark.parametrize("value", [1.5, b"bytes", object()])
def test_other_types_are_refused_rather_than_guessed(value) -> None:
    with pytest.raises(TypeError):
        _literal(value)


def test_the_characters_skipped_are_exactly_those_the_driver_leaves_alone() -> None:
    # The column-at-a-time path skips the driver's escape_string for a column with none of these characters:
    # that is only right while the driver leaves every other character, ASCII or not, as it is.
    assert set(_DRIVER_ESCAPED) == {"\x00", "\n", "\r", "\x1a", "'", '"', "\\"}
    others = [chr(code) for code in range(0x3000) if chr(code) not in _DRIVER_ESCAPED and not 0xD800 <= code < 0xE000]
    others += ["\U0001F4B8", "\U0010FFFF"]
    text = "".join(others)
    assert escape_string(text) == text


def test_upserts_have_no_bound_parameter_outside_values() -> None:
    # A placeholder in ON DUPLICATE KEY UPDATE could not be rendered per row.
    MultiRowStatement(_wallet_upsert(), wallets)
    MultiRowStatement(_transfer_upsert(), transfers)


def test_keyed_inserts_leave_existing_rows_alone_without_ignore() -> None:
    # INSERT IGNORE would turn a value the column cannot hold into a truncation; a no-op update on the key does not.
    writer = MySqlWriter(engine=None)
    for statement, key in ((writer._ledger_insert, "version"), (writer._outcome_insert, "command_id")):
        (sql,) = statement.render([{column: 1 for column in statement.columns}])
        assert "IGNORE" not in sql
        assert sql.endswith(f"ON DUPLICATE KEY UPDATE {key} = {sql.split()[2]}.{key}")


def test_rows_are_split_into_statements_below_the_size_bound() -> None:
    statement = MultiRowStatement(_insert_once(ledger_entries, "version"), ledger_entries)
    row = {column: 1 for column in statement.columns} | {"reference": "x" * 1000}
    rendered = statement.render([row] * 10_000)
    assert len(rendered) > 1
    assert all(len(sql) < STATEMENT_BYTES_MAX + 2_000 for sql in rendered)
    assert sum(sql.count("),(") + 1 for sql in rendered) == 10_000
    assert rendered[0].startswith("INSERT INTO ledger_entries (")


@pytest.mark.parametrize("reference", HOSTILE)
def test_rendered_rows_escape_every_string_like_the_driver(reference: str) -> None:
    statement = MultiRowStatement(insert(ledger_entries), ledger_entries)
    row = {column: 7 for column in statement.columns} | {"reference": reference, "hold_id": None}
    (sql,) = statement.render([row])
    assert "'" + escape_string(reference) + "'" in sql
    assert ",NULL," in sql


@pytest.mark.parametrize("tricky", HOSTILE)
def test_column_at_a_time_rendering_equals_value_by_value_rendering(tricky: str) -> None:
    statement = MultiRowStatement(insert(ledger_entries), ledger_entries)
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


def test_a_batch_is_one_statement_per_table_and_no_commit_of_its_own() -> None:
    from agents.projection import ProjectedEvent
    from app.domain import events as e

    base = {"timestamp_ms": 1, "available_after_minor": 0, "held_after_minor": 0, "hash": "0" * 64}
    batch = [
        e.WalletOpened(wallet_id="w1", command_id="c1", version=1, balance_after_minor=0, owner_id="o",
                       currency="EUR", overdraft_limit_minor=0, **base),
        e.TransferDebited(wallet_id="w1", command_id="c2", version=2, balance_after_minor=0, transfer_id="t1",
                          destination_wallet_id="w2", amount_minor=5, currency="EUR", reference="it's", **base),
    ]
    statements = MySqlWriter(engine=None).prepare([ProjectedEvent(event, "", 0, n) for n, event in enumerate(batch)])
    assert [sql.split()[2] for sql in statements] == ["ledger_entries", "command_outcomes", "transfers", "wallets"]
    assert not any("COMMIT" in sql for sql in statements)


@pytest.mark.parametrize(("error", "refused"), [
    (pymysql.err.DataError(1406, "Data too long for column 'reference' at row 3"), True),
    (pymysql.err.IntegrityError(1048, "Column 'currency' cannot be null"), True),
    (pymysql.err.OperationalError(4025, "CONSTRAINT `no_bad_owner` failed for `t`.`wallets`"), True),
    (pymysql.err.OperationalError(1644, "refused by a trigger"), True),
    (pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"), True),
    (pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"), False),
    (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), False),
    (pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"), False),
    (pymysql.err.ProgrammingError(1146, "Table 'wallet.ledger_entries' doesn't exist"), False),
    (pymysql.err.OperationalError(1054, "Unknown column 'reference' in 'field list'"), False),
    (pymysql.err.OperationalError(1142, "INSERT command denied to user"), False),
    (pymysql.err.InterfaceError(0, ""), False),
    (ConnectionResetError("reset by peer"), False),
    (SqlAlchemyOperationalError("SELECT 1", {}, pymysql.err.OperationalError(2003, "Can't connect")), False),
    (SqlAlchemyOperationalError("INSERT", {}, pymysql.err.OperationalError(4025, "CONSTRAINT failed")), True),
])
def test_mysql_errors_are_told_apart_refused_data_from_store_faults(error: Exception, refused: bool) -> None:
    result = store_error(error)
    assert isinstance(result, StoreRefused if refused else StoreUnavailable)
    if refused:
        cause = getattr(error, "orig", error)
        assert result.reason == type(cause).__name__
        assert str(cause.args[1]) in result.detail


def test_a_mysql_error_that_is_a_bug_is_not_a_store_error() -> None:
    assert store_error(KeyError("reference")) is None
    assert store_error(TypeError("no SQL literal for float")) is None


@pytest.mark.parametrize(("error", "refused"), [
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), True),
    (ResponseError("user_script:3: attempt to compare number with nil script: 73683d26"), True),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), False),
    (ReadOnlyError("You can't write against a read only replica."), False),
    (ResponseError("BUSY Redis is busy running a script"), False),
    (RedisConnectionError("Connection refused"), False),
    (OSError("network unreachable"), False),
])
def test_redis_errors_are_told_apart_refused_data_from_store_faults(error: Exception, refused: bool) -> None:
    assert isinstance(redis_sink.store_error(error), StoreRefused if refused else StoreUnavailable)
