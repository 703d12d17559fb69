"""A hostile-server test double: an HTTP proxy in front of a real sandbox that forwards everything honestly
until told to lie, in one of the ways a real server or a proxy in front of it can.

    from hostile_proxy import hostile                      # the fixture: a sandbox behind a proxy
    def test_x(hostile):
        client = TolokaClient(hostile.url, TOKEN, deadline_s=2)
        hostile.set("post_html_404", times=1)              # the next POST commits, then comes back as HTML 404
        hostile.mode = "stuck_running"                     # or set the mode directly; None = honest again
        hostile.counts["POST /user-bonuses"]               # requests seen, per method + path kind
        hostile.sandbox.url                                # the sandbox itself, bypassing the proxy

Modes (each breaks only the answers named; everything else is forwarded untouched):

    success_without_id        log entries keep success:true but lose output.user_bonus_id
    fail_empty_log            operation answers (POST and GET operation) say status FAIL; the log answers []
    post_html_404             POST /user-bonuses is forwarded (the server commits), then answered 404 HTML
    drip_body                 every API answer's body dribbles at 1 byte per `interval_s` (default 1 s)
    drip_headers              the same, from the status line on
    list_instead_of_operation POST and GET operation answered with a JSON list holding the operation
    stuck_running             operation status always rewritten to RUNNING (POST and GET operation)
    exists_then_missing       POST answered 409 OPERATION_ALREADY_EXISTS without forwarding; GET operation
                              answered a JSON 404 DOES_NOT_EXIST (without forwarding)
    log_mismatch              log entries' input.user_id and input.amount altered (`fields=` picks which)
    html_404_get              GET operation answered 404 with an HTML body (without forwarding)
    not_json                  every 2xx API answer's body replaced by an HTML page (status kept)
    replace                   `fn(kind) -> Answer | None` makes up answers without forwarding (None: forward)
    rewrite                   `fn(kind, answer) -> Answer | None` replaces forwarded answers (None: as is)

`set(mode, times=N)` switches back to honest after N altered answers. Independently of the mode,
`proxy.gzip = True` gzips forwarded answers (to clients that accept it) and `proxy.chunked = True` sends them
with chunked transfer encoding: honest, but framed the way a real server's front may frame them.
"""
from __future__ import annotations

import gzip as gzip_codec
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import urllib3

from pipeline.sandbox import SandboxServer

MODES = frozenset({
    "success_without_id", "fail_empty_log", "post_html_404", "drip_body", "drip_headers",
    "list_instead_of_operation", "stuck_running", "exists_then_missing", "log_mismatch", "html_404_get",
    "not_json", "replace", "rewrite",
})
SUBMIT, OPERATION, LOG = "POST /user-bonuses", "GET /operations/{id}", "GET /operations/{id}/log"
HTML_404 = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1>"
            b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te",
                        "trailer", "upgrade", "proxy-connection", "proxy-authorization"})
_KINDS = (
    (re.compile(r"/api/v1/user-bonuses"), "/user-bonuses"),
    (re.compile(r"/api/v1/user-bonuses/[^/]+"), "/user-bonuses/{id}"),
    (re.compile(r"/api/v1/operations"), "/operations"),
    (re.compile(r"/api/v1/operations/[^/]+"), "/operations/{id}"),
    (re.compile(r"/api/v1/operations/[^/]+/log"), "/operations/{id}/log"),
)


def kind_of(method: str, path: str) -> str:
    """'GET /operations/{id}' for GET /api/v1/operations/<uuid>?x=1; unknown paths as they are."""
    bare = path.split("?", 1)[0].rstrip("/")
    for pattern, kind in _KINDS:
        if pattern.fullmatch(bare):
            return f"{method} {kind}"
    return f"{method} {bare}"


class Answer:
    """An HTTP answer on its way back to the client: status, headers (without framing ones) and body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @classmethod
    def json(cls, status: int, data: Any) -> Answer:
        return cls(status, [("Content-Type", "application/json")], orjson.dumps(data))

    @classmethod
    def html_404(cls) -> Answer:
        return cls(404, [("Content-Type", "text/html"), ("Server", "nginx")], HTML_404)

    def data(self) -> Any:
        return orjson.loads(self.body)

    def replace_json(self, data: Any) -> Answer:
        self.body = orjson.dumps(data)
        return self


class HostileProxy:
    """The proxy, on its own threads, listening on a loopback port of its own; a context manager."""

    def __init__(self, upstream: Any, host: str = "127.0.0.1") -> None:
        self.sandbox = upstream if not isinstance(upstream, str) else None
        self.upstream = (upstream if isinstance(upstream, str) else upstream.url).rstrip("/")
        self.counts: Counter[str] = Counter()  # every request, per kind ("GET /operations/{id}", ...)
        self.altered: Counter[str] = Counter()  # answers a mode changed or made up, per kind
        self.gzip = False
        self.chunked = False
        self._mode: str | None = None
        self._opts: dict[str, Any] = {}
        self._times: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = urllib3.PoolManager(maxsize=16, retries=False)
        self._open: set[socket.socket] = set()
        self._server = _Server((host, 0), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}"

    # -- switching modes at runtime ------------------------------------------------------------------
    @property
    def mode(self) -> str | None:
        return self._mode

    @mode.setter
    def mode(self, mode: str | None) -> None:
        self.set(mode)

    def set(self, mode: str | None, *, times: int | None = None, **opts: Any) -> None:
        """Switch to `mode` (None = honest), for the next `times` altered answers (None = until changed)."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(sorted(MODES))}")
        with self._lock:
            self._mode, self._opts, self._times = mode, dict(opts), times

    def honest(self) -> None:
        self.set(None)

    def _current(self) -> tuple[str | None, dict[str, Any]]:
        with self._lock:
            return self._mode, self._opts

    def _spend(self, mode: str, kind: str) -> None:
        """Count an altered answer; after `times` of them, back to honest."""
        with self._lock:
            self.altered[kind] += 1
            if self._mode == mode and self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._mode, self._opts, self._times = None, {}, None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> HostileProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hostile-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:  # shutdown() waits for serve_forever, so only when it runs
            self._server.shutdown()
            self._thread = None
        with self._lock:
            for sock in list(self._open):  # idle keep-alive connections and drips end now
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()
        self._pool.clear()

    def __enter__(self) -> HostileProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request ---------------------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer | None:
        """The upstream's answer, or None when it dropped the connection without one."""
        fwd = {k: v for k, v in headers if k.lower() not in HOP_BY_HOP}
        try:
            resp = self._pool.request(method, self.upstream + path, body=body or None, headers=fwd,
                                      redirect=False, preload_content=True, decode_content=False, timeout=30)
        except urllib3.exceptions.HTTPError:
            return None
        return Answer(resp.status, [(k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP],
                      resp.data)

    def answer(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
               ) -> tuple[Answer | None, str | None, dict[str, Any]]:
        """(the answer to send or None for a dropped connection, the mode that altered it or None, its opts)."""
        kind = kind_of(method, path)
        with self._lock:
            self.counts[kind] += 1
        mode, opts = self._current()
        api = path.startswith("/api/")
        made_up = self._made_up(mode, opts, kind) if api else None
        if made_up is not None:
            self._spend(mode, kind)  # type: ignore[arg-type]
            return made_up, mode, opts
        answer = self.forward(method, path, headers, body)
        if answer is None or not api or mode is None:
            return answer, None, {}
        if self._alter(mode, opts, kind, answer):
            self._spend(mode, kind)
            return answer, mode, opts
        return answer, None, {}

    @staticmethod
    def _made_up(mode: str | None, opts: dict[str, Any], kind: str) -> Answer | None:
        """Answers that never reach the server."""
        if mode == "replace":
            return opts["fn"](kind)
        if mode == "exists_then_missing" and kind == SUBMIT:
            return Answer.json(409, {"request_id": "hostile", "code": "OPERATION_ALREADY_EXISTS",
                                     "message": "Operation already exists"})
        if mode == "exists_then_missing" and kind == OPERATION:
            return Answer.json(404, {"request_id": "hostile", "code": "DOES_NOT_EXIST",
                                     "message": "Operation does not exist"})
        if mode == "html_404_get" and kind == OPERATION:
            return Answer.html_404()
        return None

    @staticmethod
    def _alter(mode: str, opts: dict[str, Any], kind: str, answer: Answer) -> bool:
        """Change a forwarded answer in place as `mode` says; True when it did."""
        ok = 200 <= answer.status < 300
        operation = kind in (SUBMIT, OPERATION) and ok
        if mode in ("drip_body", "drip_headers"):
            return True  # the drip happens while sending
        if mode == "rewrite":
            new = opts["fn"](kind, answer)
            if new is None:
                return False
            answer.status, answer.headers, answer.body = new.status, new.headers, new.body
            return True
        if mode == "not_json" and ok:
            answer.status, answer.headers, answer.body = answer.status, [("Content-Type", "text/html")], (
                b"<html><body>OK</body></html>")
            return True
        if mode == "post_html_404" and kind == SUBMIT:
            fresh = Answer.html_404()
            answer.status, answer.headers, answer.body = fresh.status, fresh.headers, fresh.body
            return True
        if mode == "list_instead_of_operation" and operation:
            answer.replace_json([answer.data()])
            return True
        if mode in ("stuck_running", "fail_empty_log") and operation:
            op = answer.data()
            op["status"] = "RUNNING" if mode == "stuck_running" else "FAIL"
            if mode == "stuck_running":
                op.pop("finished", None)
                op["progress"] = 0
            answer.replace_json(op)
            return True
        if kind != LOG or not ok:
            return False
        entries = answer.data()
        if mode == "fail_empty_log":
            answer.replace_json([])
            return True
        if mode == "success_without_id":
            for entry in entries:
                if entry.get("success"):
                    (entry.get("output") or {}).pop("user_bonus_id", None)
            answer.replace_json(entries)
            return True
        if mode == "log_mismatch":
            fields = opts.get("fields", ("user_id", "amount"))
            for entry in entries:
                item = entry.get("input") or {}
                if "user_id" in fields and isinstance(item.get("user_id"), str):
                    item["user_id"] = _other_user(item["user_id"])
                if "amount" in fields and "amount" in item:
                    item["amount"] = _other_amount(item["amount"])
            answer.replace_json(entries)
            return True
        return False


def _other_user(user_id: str) -> str:
    """A different user id of the same shape (last hex digit changed)."""
    last = user_id[-1:]
    return user_id[:-1] + ("1" if last != "1" else "2")


def _other_amount(amount: Any) -> Any:
    """The amount plus 1.00, in the type it came in."""
    if isinstance(amount, str):
        return f"{float(amount) + 1:.2f}"
    return round(float(amount) + 1, 2)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: HostileProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._open.add(self.connection)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._open.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:  # the client went away (e.g. it gave up on a drip at its deadline)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._relay()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _relay(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer, mode, opts = proxy.answer(self.command, self.path, list(self.headers.items()), body)
        if answer is None:  # the server dropped the connection: so do we
            self.close_connection = True
            return
        self._send(answer, mode, float(opts.get("interval_s", 1.0)))

    def _send(self, answer: Answer, mode: str | None, interval_s: float) -> None:
        proxy = self.server.proxy
        body, headers = answer.body, list(answer.headers)
        encoded = any(k.lower() == "content-encoding" for k, _ in headers)
        if proxy.gzip and body and not encoded and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip_codec.compress(body)
            headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"] + [("Content-Encoding", "gzip")]
        if proxy.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            step = 16384
            framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                              for i in range(0, len(body), step)) + b"0\r\n\r\n"
        else:
            headers.append(("Content-Length", str(len(body))))
            framed = body
        reason = self.responses.get(answer.status, ("",))[0]
        head = f"HTTP/1.1 {answer.status} {reason}\r\n".encode("latin-1") + b"".join(
            f"{k}: {v}\r\n".encode("latin-1") for k, v in headers) + b"\r\n"
        if self.command == "HEAD":
            framed = b""
        if mode == "drip_headers":
            self._drip(head + framed, interval_s)
        elif mode == "drip_body":
            self.wfile.write(head)
            self._drip(framed, interval_s)
        else:
            self.wfile.write(head + framed)

    def _drip(self, data: bytes, interval_s: float) -> None:
        """One byte per interval until done, the client leaves, or the proxy stops."""
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            if i + 1 < len(data) and self.server.proxy._stopping.wait(interval_s):
                self.close_connection = True
                return


@pytest.fixture
def hostile(sandbox: SandboxServer) -> Iterator[HostileProxy]:
    """The `sandbox` fixture's server behind a HostileProxy, honest until a mode is set; `hostile.url` is the
    proxy, `hostile.sandbox` the server itself."""
    with HostileProxy(sandbox) as proxy:
        yield proxy
