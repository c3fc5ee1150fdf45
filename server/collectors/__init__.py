"""Collectors: read the watched systems (PostgreSQL, PgBouncer, Redis) and return the models
procedures answer with."""
