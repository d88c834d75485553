"""Avro schemas of the wire contract (.avsc files only; a package so installs carry them)."""
