"""A real PgBouncer in transaction pooling mode in front of a PostgresServer."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from tests.stack.ports import HOST, free_port, is_listening
from tests.stack.postgres import PostgresServer
from tests.stack.process import Process, find_binary, make_dir, wait_for, write_file

START_TIMEOUT = 10.0


class PgBouncer:
    """``pgbouncer <ini>`` as our child process (not ``-d``: we own the pid and its output)."""

    def __init__(
        self, tmp_dir: Path | str, postgres_server: PostgresServer, port: int | None = None
    ) -> None:
        self.postgres = postgres_server
        self.port = port or free_port()
        self.name = f"pgbouncer-{self.port}"
        self.dir = make_dir(Path(tmp_dir) / self.name)
        self.ini_path = self.dir / "pgbouncer.ini"
        binary = find_binary("pgbouncer", "/usr/sbin/pgbouncer")
        self.process = Process(
            self.name, [binary, str(self.ini_path)], cwd=self.dir, log_path=self.dir / "log"
        )

    @property
    def host(self) -> str:
        return HOST

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{database}"

    @property
    def admin_dsn(self) -> str:
        """The admin console (``SHOW POOLS``...): simple query protocol only."""
        return self.dsn("pgbouncer")

    def start(self) -> Self:
        if self.is_running():
            return self
        self._write_files()
        self.process.start()
        try:
            wait_for(
                lambda: is_listening(self.port),
                what=f"{self.name} listening",
                timeout=START_TIMEOUT,
                check=self.process.ensure_alive,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for clients).
        self.process.stop()

    def is_running(self) -> bool:
        return self.process.is_running()

    def _write_files(self) -> None:
        # trust still requires the user to be listed in auth_file.
        auth_file = write_file(self.dir / "userlist.txt", '"postgres" ""\n')
        backend = f"host={HOST} port={self.postgres.port}"
        ini = f"""\
[databases]
postgres = {backend} dbname=postgres
* = {backend}

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
admin_users = postgres
stats_users = postgres
pool_mode = transaction
default_pool_size = 5
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options,statement_timeout
"""
        write_file(self.ini_path, ini)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
