"""Running a sandbox: in a background thread (tests, `payout run`) or in the foreground (the CLI)."""
from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from .app import Sandbox
from .faults import FaultSpec
from .validation import Limits


def make_limits(unknown_users: frozenset[str] | set[str] | list[str] = frozenset(), **limits: Any) -> Limits:
    """Limits from keyword overrides (min_amount, max_amount, max_async_items, rate_limit, daily_quota, ...)."""
    for name in ("min_amount", "max_amount"):
        if name in limits:
            limits[name] = Decimal(str(limits[name]))
    return Limits(unknown_users=frozenset(unknown_users), **limits)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(sandbox: Sandbox, sock: socket.socket, stop: asyncio.Event, on_ready: Callable[[], None]) -> None:
    """Serve until `stop` is set, then close cleanly."""
    await sandbox.start(sock)
    try:
        on_ready()
        await stop.wait()
    finally:
        await sandbox.close()


class SandboxServer:
    """A sandbox on its own event loop in a background thread; use as a context manager.

    `with SandboxServer(tmp_path / "db.sqlite", token="t", faults="http_500=0.1", seed=7, port=0) as srv: srv.url`
    Extra keywords are limits: min_amount, max_amount, max_sync_items, max_async_items, rate_limit,
    daily_quota, max_list_limit.
    """

    def __init__(
        self, db_path: str | Path, token: str = "t", faults: str | None = None, seed: int = 0,
        host: str = "127.0.0.1", port: int = 0, unknown_users: frozenset[str] | set[str] | list[str] = frozenset(),
        **limits: Any,
    ) -> None:
        self.db_path = Path(db_path)
        self.token = token
        self.host, self.port = host, port
        self.url = ""
        self._sandbox = Sandbox(self.db_path, token, FaultSpec.parse(faults), seed, make_limits(unknown_users, **limits))
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> SandboxServer:
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.url = url_of(sock)
        self._thread = threading.Thread(target=self._run, args=(sock,), name="sandbox", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self, sock: socket.socket) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        try:
            loop.run_until_complete(serve(self._sandbox, sock, self._stop, self._ready.set))
        except BaseException as exc:  # surfaced to start() when startup fails
            self._error = exc
        finally:
            self._ready.set()
            loop.close()
            sock.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_forever(sandbox: Sandbox, host: str, port: int, announce: Callable[[str], None]) -> int:
    """Serve in the foreground until SIGINT/SIGTERM; return the exit code."""
    sock = bind(host, port)
    url = url_of(sock)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(sandbox, sock, stop, lambda: announce(url))

    asyncio.run(main())
    sock.close()
    return 0
