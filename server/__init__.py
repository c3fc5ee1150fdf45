"""infrawatch: watches a PostgreSQL + Redis application's infrastructure over RPC."""

__version__ = "0.1.0"
