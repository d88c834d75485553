"""The agents' one fault tree: every exception an agent raises is an `AgentError` (app/errors.py lists all roots)."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every fault raised by the processor and the sinks."""
