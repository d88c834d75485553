"""The reply protocol between the HTTP API and the processor (request/reply over Kafka).

A web process that wants the outcome of a command it publishes adds two headers to the command:
`reply.partition` (its partition of the reply topic) and `reply.token` (a random token naming the
request). Inside the same transaction as the outcome, the processor writes the answer to that partition
of `Settings.reply_topic`: key = command id, headers `reply.result` (below) and the token, value = the
wire bytes of the outcome event (as in `wallet.events`) or none. Each web process reads only its own
partition, never the event log. The reply topic is fixed by settings: a header cannot make the processor
write anywhere else.
"""

from __future__ import annotations

REPLY_PARTITION_HEADER = "reply.partition"
REPLY_TOKEN_HEADER = "reply.token"
REPLY_RESULT_HEADER = "reply.result"
# Results: decided now (value = the outcome event); a retry of a decided command (value = the first
# outcome event, or none once it is no longer kept); the id was used with another body; poison (the
# `error.code` and `error.detail` headers say why).
REPLY_DECIDED = "decided"
REPLY_DUPLICATE = "duplicate"
REPLY_CONFLICT = "conflict"
REPLY_INVALID = "invalid"
# A token longer than this is ignored (no reply): it only has to be unique among a process's requests.
REPLY_TOKEN_BYTES_MAX = 64


def reply_address(headers, reply_partitions: int) -> tuple[int, bytes] | None:
    """(reply partition, token) asked for by a command's Kafka headers, or None when no valid one is."""
    if not headers:
        return None
    partition = token = None
    for name, value in headers:
        if name == REPLY_PARTITION_HEADER:
            partition = value
        elif name == REPLY_TOKEN_HEADER:
            token = value
    if partition is None or token is None or not 0 < len(token) <= REPLY_TOKEN_BYTES_MAX:
        return None
    try:
        number = int(partition)
    except ValueError:
        return None
    if not 0 <= number < reply_partitions:
        return None
    return number, bytes(token)
