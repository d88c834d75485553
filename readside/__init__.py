"""The read side's stores: MySQL read model (tables, queries, engines, replica lag) and Redis (client, keys)."""
