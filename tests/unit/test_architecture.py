"""The layers of docs/ARCHITECTURE.md hold: `lint-imports` (import-linter) with the contracts in pyproject.toml.

Imports inside functions count. Before the layering, `app` held the entry points (cli, worker, rebuild,
reconcile, dlq) that import `agents/`, `tables/` and `web/`, and `web/` imported the sinks in `agents/`
for its store clients: the "layers" contract fails on that code.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import REPO_ROOT

LINT_TIMEOUT_S = 120


def test_every_import_contract_of_pyproject_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=LINT_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "2 kept" in result.stdout, result.stdout


# Each layer's one exception root (app/errors.py). Before these roots, the layers held about fifteen unrelated
# exception bases (Exception, ValueError, RuntimeError): this test fails on that code.
LAYER_ROOTS = {
    "app": ("app.errors", "FoundationError"),
    "readside": ("readside.errors", "ReadSideError"),
    "agents": ("agents.errors", "AgentError"),
    "web": ("web.errors", "WebError"),
    "ops": ("ops.local.stack", "StackError"),
    "wallet": ("wallet.errors", "EntryPointError"),
}


def _exceptions_defined_in(package: str) -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, prefix=f"{package}."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__):
                found.append(value)
    return found


@pytest.mark.parametrize("package", sorted(LAYER_ROOTS))
def test_every_exception_of_a_layer_derives_from_its_root(package: str) -> None:
    module, name = LAYER_ROOTS[package]
    root = getattr(importlib.import_module(module), name)
    exceptions = _exceptions_defined_in(package)
    assert root in exceptions
    strays = sorted(f"{e.__module__}.{e.__qualname__}" for e in exceptions if not issubclass(e, root))
    assert strays == [], f"exceptions of {package}/ outside {name}: {strays}"


def test_tables_raise_no_exceptions_of_their_own() -> None:
    # The processor's store raises the foundation's and RocksDB's faults; a new one needs a root first.
    assert _exceptions_defined_in("tables") == []
