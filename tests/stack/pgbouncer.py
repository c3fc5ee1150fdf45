"""A real PgBouncer in transaction pooling mode in front of a PostgresServer."""

from __future__ import annotations

from pathlib import Path

from tests.stack.ports import HOST, is_listening
from tests.stack.postgres import PostgresServer
from tests.stack.process import find_binary, write_file
from tests.stack.server import ChildServer


class PgBouncer(ChildServer):
    """``pgbouncer <ini>`` as our child process (not ``-d``: we own the pid and its output).

    SIGTERM, with which it is stopped, is PgBouncer's immediate shutdown (SIGINT would wait for
    clients).
    """

    readiness = "listening"

    def __init__(
        self, tmp_dir: Path | str, postgres_server: PostgresServer, port: int | None = None
    ) -> None:
        super().__init__(
            tmp_dir,
            name="pgbouncer",
            port=port,
            binary=find_binary("pgbouncer", "/usr/sbin/pgbouncer"),
            conf_name="pgbouncer.ini",
        )
        self.postgres = postgres_server

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{database}"

    @property
    def admin_dsn(self) -> str:
        """The admin console (``SHOW POOLS``...): simple query protocol only."""
        return self.dsn("pgbouncer")

    def ready(self) -> bool:
        return is_listening(self.port)

    def _prepare(self) -> None:
        # Rewritten at every start. trust still requires the user to be listed in auth_file.
        write_file(self.dir / "userlist.txt", '"postgres" ""\n')
        self._write_conf()

    def conf(self) -> str:
        backend = f"host={HOST} port={self.postgres.port}"
        return f"""\
[databases]
postgres = {backend} dbname=postgres
* = {backend}

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
admin_users = postgres
stats_users = postgres
pool_mode = transaction
default_pool_size = 5
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options,statement_timeout
"""
