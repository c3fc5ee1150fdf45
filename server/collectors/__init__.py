"""Collectors: read Postgres, replicas, PgBouncer and Redis, and return models."""
