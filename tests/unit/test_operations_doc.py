"""docs/OPERATIONS.md lists every metric the service defines, and only those."""

from __future__ import annotations

import re

from app.settings import REPO_ROOT

METRIC_SOURCES = (REPO_ROOT / "app" / "metrics.py", *sorted((REPO_ROOT / "web").glob("*.py")))
DEFINITION_RE = re.compile(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(wallet_[a-z0-9_]+)\"")


def _defined() -> set[str]:
    return {name for path in METRIC_SOURCES for name in DEFINITION_RE.findall(path.read_text())}


def test_operations_doc_has_a_row_for_every_defined_metric():
    defined = _defined()
    assert {"wallet_commands_total", "wallet_http_requests_total"} <= defined  # the pattern still finds them
    rows = set(re.findall(r"^\| `(wallet_[a-z0-9_]+)` \|", (REPO_ROOT / "docs" / "OPERATIONS.md").read_text(), re.M))
    assert defined - rows == set(), "metrics missing from the table in docs/OPERATIONS.md"
    undocumented_extra = rows - defined - {"wallet_reconcile_differences",
                                           "wallet_reconcile_last_success_timestamp_seconds"}
    assert undocumented_extra == set(), "docs/OPERATIONS.md lists metrics nothing defines"
