"""Bearer API keys with scopes from `WALLET_API_KEYS` (`key=scope+scope,key2=scope`).

Keys are kept only as SHA-256 digests and compared in constant time; a key never reaches a log line
or a response.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from web.errors import WebError

SCOPES = frozenset({"wallets:read", "wallets:write", "admin"})
# Hex digits of a key's SHA-256 that name it in logs, rate limits and scoped command ids.
KEY_ID_LENGTH = 8


class ApiKeysInvalid(WebError, ValueError):
    """WALLET_API_KEYS is malformed. Operator action: fix it to `key=scope+scope,key2=scope`."""


@dataclass(frozen=True)
class Principal:
    key_id: str  # first KEY_ID_LENGTH hex digits of the key's digest: safe to log
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, spec: str) -> None:
        self._keys: list[tuple[bytes, Principal]] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, scopes_text = item.partition("=")
            scopes = frozenset(filter(None, scopes_text.split("+")))
            if not sep or not key or not scopes or not scopes <= SCOPES:
                raise ApiKeysInvalid(f"entry {len(self._keys) + 1} of WALLET_API_KEYS is not key=scope+scope "
                                     f"with scopes from {sorted(SCOPES)}")
            digest = _digest(key)
            if any(known == digest for known, _ in self._keys):
                raise ApiKeysInvalid(f"entry {len(self._keys) + 1} of WALLET_API_KEYS repeats an earlier key")
            # The key id scopes Idempotency-Keys (app/identity.py): two keys must never share one.
            if any(known.hex()[:KEY_ID_LENGTH] == digest.hex()[:KEY_ID_LENGTH] for known, _ in self._keys):
                raise ApiKeysInvalid(f"entry {len(self._keys) + 1} of WALLET_API_KEYS shares its key id with an "
                                     "earlier key; pick another key")
            self._keys.append((digest, Principal(digest.hex()[:KEY_ID_LENGTH], scopes)))

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, header: str | None) -> Principal | None:
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():  # RFC 9110: the scheme is case-insensitive
            return None
        digest = _digest(credentials.strip())
        found = None
        for known, principal in self._keys:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(known, digest):
                found = principal
        return found
