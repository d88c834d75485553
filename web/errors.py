"""The web layer's one fault tree: every exception the API raises is a `WebError` (app/errors.py lists all roots)."""

from __future__ import annotations


class WebError(Exception):
    """Base of every fault raised by the HTTP API."""
