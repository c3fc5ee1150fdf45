"""A real PostgreSQL server (primary or streaming replica) in a temporary directory.

Tuned for tests, not durability: fsync, full-page writes and synchronous commit are off. WAL
level ``replica`` and ``track_commit_timestamp`` let replicas stream and report lag.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

from tests.stack.ports import HOST
from tests.stack.process import StackError, find_binary, make_dir, run, write_file
from tests.stack.server import StackServer

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Unix socket paths are limited to 107 bytes; past that we listen on TCP only.
_MAX_SOCKET_PATH = 100
START_TIMEOUT = 30
REPLICA_TIMEOUT = 30.0

_PG_HBA = """\
# Written by tests/stack: trust on loopback and the local socket only.
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
"""


@functools.cache
def pg_bindir() -> Path:
    """The directory of pg_ctl; every PostgreSQL tool is taken from there, so versions match.

    (On Debian /usr/bin/psql is a wrapper while initdb and pg_ctl are not on PATH at all.)
    """
    # resolve(): a pg_ctl on PATH may be a lone symlink into the real bin directory.
    return Path(find_binary("pg_ctl", "/usr/lib/postgresql/*/bin/pg_ctl")).resolve().parent


def _tool(name: str) -> str:
    return str(pg_bindir() / name)


class PostgresServer(StackServer):
    """One PostgreSQL data directory and the server running on it.

    ``start()`` creates the cluster on first use (initdb), and starts the same data directory
    on the same port again after ``stop()``. ``pg_ctl`` runs the server: its ``start -w`` is the
    readiness wait, its ``stop`` the bounded stop.
    """

    def __init__(
        self,
        tmp_dir: Path | str,
        *,
        name: str = "postgres",
        port: int | None = None,
        max_connections: int = 100,
    ):
        super().__init__(tmp_dir, name=name, port=port, log_name="postgres.log")
        self.max_connections = max_connections
        self.data_dir = self.dir / "data"
        self.primary: PostgresServer | None = None

    # --- addresses ---

    def dsn(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{database}"

    @property
    def socket_dir(self) -> Path | None:
        path = self.dir / "sock"
        return path if len(str(path / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH else None

    # --- lifecycle ---

    def _prepare(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._write_conf()

    def _launch(self) -> None:
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT), "-l", str(self.log_path))

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``; an ``immediate`` stop if the requested one hangs."""
        if self.is_running():
            try:
                self._pg_ctl("stop", "-w", "-t", str(START_TIMEOUT), "-m", mode)
            except StackError:
                if mode == "immediate":
                    raise
                self._pg_ctl("stop", "-w", "-t", "10", "-m", "immediate")
        self._forget_exit_stop()

    def _abort(self) -> None:
        self.stop("immediate")

    def is_running(self) -> bool:
        # postmaster.pid is removed on a clean stop; after a crash its pid is gone.
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def ensure_alive(self) -> None:
        if not self.is_running():
            raise self.failure(f"{self.name} is not running")

    # --- SQL ---

    def psql(
        self,
        sql: str,
        database: str = "postgres",
        *,
        variables: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Run SQL (several statements allowed, each in its own transaction); unaligned output.

        ``variables`` are psql variables: write ``:'name'`` in the SQL for a quoted literal.
        """
        argv = [_tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At", "-f", "-"]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        argv += ["-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", database]
        return run(argv, cwd=self.dir, input=sql, timeout=timeout).strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{_identifier(name)}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: connections a test left open (or PgBouncer's server connections) are ended.
        self.psql(f'DROP DATABASE IF EXISTS "{_identifier(name)}" WITH (FORCE)')

    # --- replication ---

    def make_replica(self, tmp_dir: Path | str, *, port: int | None = None) -> PostgresServer:
        """A streaming replica of this server, started and streaming."""
        replica = PostgresServer(tmp_dir, name="replica", port=port)
        replica.primary = self
        make_dir(replica.data_dir)
        run(
            [
                _tool("pg_basebackup"),
                *("-h", HOST, "-p", str(self.port), "-U", "postgres"),
                *("-D", str(replica.data_dir), "-R", "-X", "stream"),
                # A fast checkpoint: the default spread one can take minutes to begin the copy.
                "--checkpoint=fast",
                "--no-sync",
            ],
            cwd=replica.dir,
            timeout=60,
        )
        replica.start()
        try:
            replica.wait_until_streaming()
        except BaseException:
            replica.stop("immediate")
            raise
        return replica

    def wait_until_streaming(self, timeout: float = REPLICA_TIMEOUT) -> None:
        """Wait until this replica is in recovery and its primary lists it as streaming."""
        primary = self._primary()
        self.wait_until(
            lambda: self.psql("SELECT pg_is_in_recovery()") == "t",
            what="in recovery",
            timeout=timeout,
        )
        streaming = (
            "SELECT count(*) FROM pg_stat_replication "
            "WHERE application_name = :'name' AND state = 'streaming'"
        )
        self.wait_until(
            lambda: primary.psql(streaming, variables={"name": self.name}) == "1",
            what=f"streaming from {primary.name}",
            timeout=timeout,
        )

    def wait_for_replay(self, timeout: float = REPLICA_TIMEOUT) -> None:
        """Wait until this replica has replayed everything its primary had written so far.

        The target is the primary's WAL *insert* position. With ``synchronous_commit = off``
        (this stack's setting, for speed) a commit returns while its record may still sit in
        the WAL buffers, behind ``pg_current_wal_lsn()`` (the write position): a replica
        caught up to that had not yet replayed the commit, and a test then missed the table it
        had just created (seen once in a full run). The WAL writer flushes within
        ``wal_writer_delay``, so the insert position is always reached."""
        target = self._primary().psql("SELECT pg_current_wal_insert_lsn()")
        replayed = "SELECT pg_last_wal_replay_lsn() >= :'target'::pg_lsn"
        self.wait_until(
            lambda: self.psql(replayed, variables={"target": target}) == "t",
            what=f"replaying up to {target}",
            timeout=timeout,
        )

    def _primary(self) -> PostgresServer:
        if self.primary is None:
            raise StackError(f"{self.name} is not a replica")
        return self.primary

    # --- files ---

    def _initdb(self) -> None:
        make_dir(self.data_dir)
        run(
            [
                _tool("initdb"),
                *("-D", str(self.data_dir), "-U", "postgres", "-A", "trust"),
                *("-E", "UTF8", "--locale=C", "--no-sync"),
            ],
            cwd=self.dir,
            timeout=120,
        )
        write_file(self.data_dir / "pg_hba.conf", _PG_HBA)
        # Our settings live in their own file, rewritten at every start: a replica copies the
        # primary's files with pg_basebackup and then needs its own port and directories.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude = 'infrawatch.conf'\n")

    def _write_conf(self) -> None:
        socket_dir = self.socket_dir
        if socket_dir is not None:
            make_dir(socket_dir)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{socket_dir or ''}'",
            # Also the replica's application_name in pg_stat_replication.
            "cluster_name": f"'{self.name}'",
            "max_connections": str(self.max_connections),
            # What database.topQueries reads; each database still needs CREATE EXTENSION.
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "top",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_keep_size": "'64MB'",
            "hot_standby": "on",
            # A replica reconnects quickly after a test restarts its primary.
            "wal_retrieve_retry_interval": "'500ms'",
            "track_commit_timestamp": "on",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        write_file(self.data_dir / "infrawatch.conf", text)

    def _pg_ctl(self, *args: str) -> str:
        return run([_tool("pg_ctl"), "-D", str(self.data_dir), *args], cwd=self.dir, timeout=60)


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name
