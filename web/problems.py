"""Errors as `application/problem+json` (RFC 9457): type, title, status, detail, code."""

from __future__ import annotations

import json

from aiohttp import web

PROBLEM_TYPE_BASE = "https://wallet.example/problems/"


def problem(status: int, code: str, title: str, detail: str = "",
            headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"), "title": title,
            "status": status, "detail": detail, "code": code}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


class ProblemError(Exception):
    """Raised by handlers; the middleware renders it as problem+json."""

    def __init__(self, status: int, code: str, title: str, detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or title)
        self.response = problem(status, code, title, detail, headers)
