"""Reusable sandbox fixtures and helpers: an in-process server, a real subprocess, an authorized session."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from waiting import wait_for

from pipeline.sandbox import SandboxServer

TOKEN = "sandbox-test-token"
ADMIN = {"Authorization": f"OAuth {TOKEN}"}  # the sandbox's admin endpoints need its token too
REPO = Path(__file__).resolve().parents[1]


def user_id(n: int) -> str:
    """A user id that exists in the sandbox (32 lowercase hex characters)."""
    return f"{n:032x}"


def bonus(n: int = 1, amount: float = 1.5, **extra: Any) -> dict[str, Any]:
    """A valid wire bonus for user `n`."""
    item: dict[str, Any] = {
        "user_id": user_id(n), "amount": amount, "public_title": {"EN": "Thanks"},
        "public_message": {"EN": f"Bonus {n}"}, "without_message": False,
    }
    item.update(extra)
    return item


def api_session(token: str = TOKEN) -> requests.Session:
    """A requests session that sends `Authorization: OAuth <token>`."""
    session = requests.Session()
    session.headers["Authorization"] = f"OAuth {token}"
    return session


def set_faults(url: str, spec: str, seed: int = 0) -> dict[str, Any]:
    """Change the faults of a running sandbox through its admin endpoint."""
    response = requests.post(f"{url}/_sandbox/faults", json={"spec": spec, "seed": seed}, timeout=10,
                             headers=ADMIN)
    response.raise_for_status()
    return response.json()


def stats(url: str) -> dict[str, Any]:
    """The counters of a running sandbox."""
    return requests.get(f"{url}/_sandbox/stats", timeout=10, headers=ADMIN).json()


def operation(session: requests.Session, url: str, op_id: str) -> dict[str, Any]:
    """The operation as the server shows it now."""
    return session.get(f"{url}/api/v1/operations/{op_id}", timeout=10).json()


def wait_operation(session: requests.Session, url: str, op_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll an operation until SUCCESS/FAIL and return it; fail the test after `timeout` s."""
    def finished() -> dict[str, Any] | None:
        op = operation(session, url, op_id)
        return op if op["status"] in ("SUCCESS", "FAIL") else None

    return wait_for(finished, f"operation {op_id} to finish", timeout)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """A running in-process sandbox on a fresh database, token TOKEN, no faults."""
    with SandboxServer(tmp_path / "sandbox.sqlite", token=TOKEN) as server:
        yield server


class SandboxProcess:
    """`python -m pipeline.sandbox` as a real subprocess on a free port; kill and restart it on the same db."""

    def __init__(self, db: Path, *args: str, token: str = TOKEN) -> None:
        self.db, self.args, self.token = db, list(args), token
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> SandboxProcess:
        """Start (on the previous port after a kill) and wait for the "listening on" line."""
        cmd = [sys.executable, "-m", "pipeline.sandbox", "--port", str(self.port), "--db", str(self.db),
               "--token", self.token, *self.args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the server prints its URL once it accepts connections
        if "listening on" not in line:
            self.kill()
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` and wait for the process to end; return its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def restart(self) -> SandboxProcess:
        self.kill()
        return self.start()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    """A `python -m pipeline.sandbox` subprocess on a fresh database (faults can be set via set_faults)."""
    with SandboxProcess(tmp_path / "sandbox.sqlite") as process:
        yield process
