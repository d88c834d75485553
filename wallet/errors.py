"""The entry points' one fault tree: every exception the CLI's commands raise is an `EntryPointError`
(app/errors.py lists all roots)."""

from __future__ import annotations


class EntryPointError(Exception):
    """Base of every fault raised by the entry points (worker wiring, rebuild, DLQ, benchmark isolation)."""
