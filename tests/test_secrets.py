"""Issue 10, secrets: the token never reaches a log line, error, report or ledger — even from a server that echoes
it back; never crosses the network in clear; never follows a redirect; files are owner-only whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from payout_helpers import payout_process
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv

from pipeline.cli import main
from pipeline.errors import ApiUnexpectedAnswer, UsageError
from pipeline.toloka import RetryPolicy, TolokaClient

SECRET = "echo-me-s3cret-token-value"


class EchoServer:
    """A real HTTP server that puts the Authorization header it receives into its answers (as some proxies and
    misconfigured servers do). `mode`: "reject" answers POSTs 400 with the header in the message (listings are
    honest and empty), "refuse" answers everything 401 with the header, "redirect" answers 307 to `location`."""

    def __init__(self, mode: str, location: str = "") -> None:
        self.mode, self.location, self.seen = mode, location, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def _answer(self) -> None:
                auth = self.headers.get("Authorization") or ""
                server.seen.append((self.command, self.path, auth))
                if server.mode == "redirect":
                    self.send_response(307)
                    self.send_header("Location", server.location + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.mode == "reject" and self.command == "GET" and self.path.startswith("/api/v1/operations?"):
                    status, body = 200, {"items": [], "has_more": False}
                else:
                    status = 400 if server.mode == "reject" else 401
                    code = "VALIDATION_ERROR" if status == 400 else "AUTHENTICATION_ERROR"
                    body = {"code": code, "message": f"bad header {auth!r}", "payload": {"you_sent": auth},
                            "request_id": auth}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo_reject() -> Iterator[EchoServer]:
    with EchoServer("reject") as server:
        yield server


def every_artefact(data: Path) -> str:
    """Every byte under `data` as text, Parquet files decoded too (their pages are compressed)."""
    texts = []
    for path in data.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
            if path.suffix == ".parquet":
                texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
    return "\n".join(texts)


@pytest.mark.parametrize("mode", ["reject", "refuse"])
def test_a_token_echoed_by_the_server_reaches_no_artefact(mode: str, tmp_path: Path) -> None:
    with EchoServer(mode) as server:
        sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
        data = tmp_path / "data"
        argv = ["run", str(sheet), "--api-url", server.url, "--batch-id", "echo", "--data-dir", str(data)]
        proc = payout_process(*argv, output=subprocess.PIPE, token=SECRET)
        output, _ = proc.communicate(timeout=120)
    assert any(SECRET in auth for _, _, auth in server.seen)  # the server did see it, and echoed it
    assert proc.returncode in (1, 3), output.decode()
    said = output.decode() + every_artefact(data)
    assert SECRET not in said
    assert "***" in said  # the echo did reach the report, redacted (so this test is not vacuous)
    assert SECRET not in " ".join(argv)  # nor on the command line, where `ps` would show it
    summary = json.loads(next(data.rglob("summary.json")).read_text())
    if mode == "refuse":
        assert "fix TOLOKA_TOKEN" in summary["next_step"] and "***" in summary["stopped_by"]


def test_plain_http_to_a_non_loopback_host_is_refused_before_anything(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", SECRET)
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    data = tmp_path / "data"
    assert main(["run", str(sheet), "--api-url", "http://payout.example.com", "--batch-id", "b",
                 "--data-dir", str(data)]) == 2
    assert "https://" in capsys.readouterr().err and not data.exists()
    with pytest.raises(UsageError):
        TolokaClient("http://10.1.2.3:8000", SECRET)
    TolokaClient("http://[::1]:8000", SECRET).close()  # loopback (a local sandbox) stays allowed
    TolokaClient("https://toloka.dev", SECRET).close()


def test_a_redirect_to_another_host_is_not_followed_with_the_token() -> None:
    with EchoServer("refuse") as elsewhere, EchoServer("redirect", location=elsewhere.url) as server:
        with TolokaClient(server.url, SECRET, retry=RetryPolicy(max_retries=0)) as client, \
                pytest.raises(ApiUnexpectedAnswer) as caught:
            client.get_operation("op-1")
        assert server.seen and elsewhere.seen == []
        assert SECRET not in str(caught.value)


def test_ledger_and_reports_are_owner_only_whatever_the_umask(sandbox, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(2)])
    data = tmp_path / "data"
    old = os.umask(0o002)  # a permissive umask, as on many desktops
    try:
        assert main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "m", "--data-dir", str(data)]) == 0
    finally:
        os.umask(old)
    made = [p for p in data.rglob("*")] + [data]
    assert made and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in made), \
        {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made}
    assert any(p.suffix == ".sqlite" for p in made) and any(p.name == "summary.json" for p in made)


def test_the_token_can_come_from_a_file(sandbox, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("TOLOKA_TOKEN_FILE", str(secret))
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "f", "--data-dir", str(tmp_path)]) == 0
    secret.write_text("")
    assert main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "f", "--data-dir", str(tmp_path)]) == 2


def test_the_sandbox_refuses_a_public_host_and_guards_its_admin_endpoints(sandbox, tmp_path: Path, capsys) -> None:
    assert main(["sandbox", "--host", "0.0.0.0", "--db", str(tmp_path / "s.sqlite"), "--token", "t"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10).status_code == 401
    assert requests.post(f"{sandbox.url}/_sandbox/faults", json={"spec": "http_500=1"}, timeout=10).status_code == 401
    assert requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10,
                        headers={"Authorization": f"OAuth {TOKEN}"}).status_code == 200
