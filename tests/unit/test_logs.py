"""Structured logs: JSON fields from `extra=`, and bursts of one message bounded with a count of the dropped."""

from __future__ import annotations

import json
import logging

from app.logs import BurstLimit, JsonFormatter


def _record(msg: str, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("wallet.processor", level, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_json_line_carries_the_fields_given_as_extra():
    line = json.loads(JsonFormatter().format(_record("poison message to DLQ", reason="WRONG_PARTITION",
                                                     wallet_id="w-1", command_id="c-1", partition=2, offset=7)))
    assert line["msg"] == "poison message to DLQ" and line["level"] == "WARNING"
    assert {k: line[k] for k in ("reason", "wallet_id", "command_id", "partition", "offset")} == {
        "reason": "WRONG_PARTITION", "wallet_id": "w-1", "command_id": "c-1", "partition": 2, "offset": 7}


def test_a_burst_of_one_message_is_cut_after_the_limit_and_the_next_window_reports_the_dropped_count():
    now = [0.0]
    limit = BurstLimit(lines_max=3, window_s=10.0, clock=lambda: now[0])
    passed = [limit.filter(_record("poison message to DLQ")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(_record("another message")), "another message has its own budget"
    now[0] = 10.0
    record = _record("poison message to DLQ")
    assert limit.filter(record) and record.suppressed == 7


def test_errors_are_never_dropped():
    limit = BurstLimit(lines_max=1, window_s=10.0, clock=lambda: 0.0)
    assert all(limit.filter(_record("store unavailable", logging.ERROR)) for _ in range(5))
