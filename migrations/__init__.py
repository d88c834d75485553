"""Alembic migrations of the MySQL read model (a package so installs carry them)."""
