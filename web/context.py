"""Typed state of the API application (aiohttp `AppKey`s), shared by its route modules."""

from __future__ import annotations

from aiohttp import ClientSession, web
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from web.auth import ApiKeys

SETTINGS = web.AppKey("settings", Settings)
API_KEYS = web.AppKey("api_keys", ApiKeys)
REDIS = web.AppKey("redis", object)
# Reads of history and balance-at-a-time: the replica when configured, else the primary.
MYSQL = web.AppKey("mysql", AsyncEngine)
# The freshest projection: status polls (commands, transfers) and the fallback of wallet reads.
MYSQL_PRIMARY = web.AppKey("mysql_primary", AsyncEngine)
# {"client": AIOKafkaAdminClient | None}: started on the first /readyz.
KAFKA_ADMIN = web.AppKey("kafka_admin", dict)
GATEWAY = web.AppKey("gateway", object)  # web.commands.CommandGateway
RATE_LIMITER = web.AppKey("rate_limiter", object)  # web.ratelimit.RateLimiter
TABLE_CLIENT = web.AppKey("table_client", ClientSession)  # strong reads from the processors' tables
OWNERS = web.AppKey("owners", object)  # web.owners.OwnerDirectory: who owns each partition, from the group
WALLET_CURRENCIES = web.AppKey("wallet_currencies", dict)  # wallet_id -> currency (bounded; never changes)
