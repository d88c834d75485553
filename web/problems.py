"""Errors as `application/problem+json` (RFC 9457): type, title, status, detail, code."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from web.errors import WebError

PROBLEM_TYPE_BASE = "https://wallet.example/problems/"


def problem(status: int, code: str, title: str, detail: str = "",
            headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> web.Response:
    """A problem response; `extra` adds members (RFC 9457 extension members such as `command_id`)."""
    body = {"type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"), "title": title,
            "status": status, "detail": detail, "code": code, **(extra or {})}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


class ProblemError(WebError):
    """Raised by handlers; the middleware renders it as problem+json."""

    def __init__(self, status: int, code: str, title: str, detail: str = "",
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail or title)
        self.response = problem(status, code, title, detail, headers, extra)
