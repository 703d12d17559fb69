"""A throwaway PostgreSQL server for tests, CI and benchmarks: Debian's PostgreSQL 15 binaries, a temporary
folder, a loopback TCP port and a unix socket inside that folder; never the machine's own cluster.

`initdb` refuses to run as root, so as root the server runs as the `postgres` user (`runuser`). Used by the
`pg_url` fixture (tests/conftest.py) and by `tests/perf/bench_workers.py`; `python tests/pg_server.py` starts
one and prints its URL until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(os.environ.get("PAYOUT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """None when a server can be started here, else why not (the reason a test is skipped with)."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (BIN / b).is_file()]
    if missing:
        return f"PostgreSQL server binaries not found in {BIN} ({', '.join(missing)}); set PAYOUT_PG_BIN"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """`with PgServer() as pg: pg.new_database()` gives a postgresql:// URL to a fresh database."""

    def __init__(self, *, max_connections: int = 200) -> None:
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="payout-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "payout"

    def _as_owner(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start(self) -> PgServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(self._as_owner(str(BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                                      "--no-locale", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections={self.max_connections}"
                " -c shared_buffers=128MB -c log_min_messages=warning")
        subprocess.run(self._as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                                      "-t", "60", "-o", opts, "start"), check=True, capture_output=True)
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database (one per test keeps tests independent) and its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(self._as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- pytest fixtures (re-exported by tests/conftest.py) ---------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway server for the whole session (started on first use; skipped only without the binaries).

    `PAYOUT_PG_URL=postgresql://...` uses an existing server instead (its user must be allowed CREATE DATABASE);
    `PAYOUT_REQUIRE_PG=1` (set by .ci/run) turns a missing server into a failure instead of a skip."""
    if os.environ.get("PAYOUT_PG_URL"):
        yield ExternalServer(os.environ["PAYOUT_PG_URL"])  # type: ignore[misc]
        return
    reason = available()
    if reason and os.environ.get("PAYOUT_REQUIRE_PG"):  # CI (.ci/run): the PostgreSQL half must not be skipped
        pytest.fail(f"PAYOUT_REQUIRE_PG is set but {reason}")
    if reason:
        pytest.skip(reason)
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh database of the session's server: one per test."""
    return pg_server.new_database()


class ExternalServer(PgServer):
    """A server someone else runs (CI service, a developer's own): only `new_database` is used."""

    def __init__(self, url: str) -> None:  # noqa: D107 - nothing is started or stopped
        self._base = url

    def url(self, dbname: str = "postgres") -> str:
        return self._base.rsplit("/", 1)[0] + f"/{dbname}"


if __name__ == "__main__":
    with PgServer() as server:
        print(server.url(), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
