"""The foundation's one fault tree: every exception raised by `app` (the domain included) is a `FoundationError`.

Each layer of docs/ARCHITECTURE.md has one root, so a boundary can tell whose fault it caught:

    FoundationError (app)        DomainError (app.domain), CodecError, RegistryUnavailable, SchemaNotResolved,
                                 IdentityRefused, SettingsError, PartitionCountMismatch, TopicMissing
    ReadSideError (readside)     StoreUnavailable
    AgentError (agents)          PartitionFenced, StoreRefused, SessionRefused
    WebError (web)               ProblemError, GatewayUnavailable, GatewayBusy, AmountInvalid, ApiKeysInvalid
    StackError (ops)             the local stack could not be started
    EntryPointError (wallet)     WorkerFailed, LogReadStalled, DlqError, IsolationError

They are mapped to what the outside sees at the boundaries only: a DLQ reason (the `code` of CodecError and
IdentityRefused), problem+json (web/problems.py), a 503, a sink's retry, or a worker exiting with status 1.
tests/unit/test_architecture.py checks that every exception class of a layer derives from its root.
"""

from __future__ import annotations


class FoundationError(Exception):
    """Base of every fault raised by the foundation layer (`app`)."""
