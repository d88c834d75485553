"""The read side's one fault: a store (MySQL, Redis, a processor's table view) did not answer or failed.

Raised by the read side's clients and the sinks; mapped at the boundaries only: a sink retries with backoff
(agents/projection.py), a read falls back to the next store or answers 503 (web/reads.py). A row a store
refuses (bad data, not a fault) is not this: it goes to the sink DLQ.
"""

from __future__ import annotations


class ReadSideError(Exception):
    """Base of every fault raised by the read side's stores (app/errors.py lists every layer's root)."""


class StoreUnavailable(ReadSideError):
    """A read-model store did not answer, or failed, for a read or a write.

    Operator action: see the store's health (`wallet stack status`, `/readyz`); nothing is lost: sinks retry
    and reads fall back.
    """
