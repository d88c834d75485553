"""The layers of docs/ARCHITECTURE.md hold: `lint-imports` (import-linter) with the contracts in pyproject.toml.

Imports inside functions count. Before the layering, `app` held the entry points (cli, worker, rebuild,
reconcile, dlq) that import `agents/`, `tables/` and `web/`, and `web/` imported the sinks in `agents/`
for its store clients: the "layers" contract fails on that code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.settings import REPO_ROOT

LINT_TIMEOUT_S = 120


def test_every_import_contract_of_pyproject_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=LINT_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "2 kept" in result.stdout, result.stdout
