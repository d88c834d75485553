"""`wallet init`: everything a fresh stack needs before workers start (idempotent)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings


def alembic_config(settings: Settings):
    """The Alembic configuration of the MySQL read model of `settings`."""
    from alembic.config import Config

    import migrations

    config = Config()  # no alembic.ini needed: installs (the Docker image) carry the migrations package
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = settings.mysql_dsn.replace("+aiomysql", "+pymysql")
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """Run the Alembic migrations of the MySQL read model up to `revision` (head: all)."""
    from alembic import command

    command.upgrade(alembic_config(settings), revision)


def register_schemas(settings: Settings) -> dict[str, int]:
    """Register the command and event schemas under each topic's subject (BACKWARD compatible)."""
    from app.codec import CommandCodec, EventCodec, SchemaRegistry

    registry = SchemaRegistry(settings.registry_url)
    codecs = [CommandCodec(registry, settings.commands_topic), CommandCodec(registry, settings.transfer_legs_topic),
              EventCodec(registry, settings.events_topic)]
    return {codec.subject: codec.schema_id for codec in codecs}


def init(settings: Settings) -> None:
    from app.topics import check_partitions, create_topics

    created = create_topics(settings)
    check_partitions(settings)
    subjects = register_schemas(settings)
    migrate(settings)
    print(f"init: topics created {created or 'none (all existed)'}; schemas {subjects}; MySQL migrated",
          flush=True)
