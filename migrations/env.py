"""Alembic environment: runs migrations against WALLET_MYSQL_DSN (sync driver for DDL)."""

from alembic import context
from sqlalchemy import create_engine

from app.settings import Settings


def sync_url(dsn: str) -> str:
    return dsn.replace("+aiomysql", "+pymysql")


url = context.config.attributes.get("url") or sync_url(Settings.from_env().mysql_dsn)
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
