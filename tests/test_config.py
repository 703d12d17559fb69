from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings, token_from_env
from pipeline.errors import UsageError


def test_local_has_no_api_url_so_the_embedded_sandbox_runs():
    s = load_settings("local")
    assert s.env == "local" and s.api_url is None
    assert s.chunk_size == 5000 and s.concurrency == 4 and s.dedupe_policy == "keep-first"


def test_sandbox_and_production_point_at_toloka_base_hosts():
    assert load_settings("sandbox").api_url == "https://sandbox.toloka.dev"
    assert load_settings("production").api_url == "https://toloka.dev"


def test_config_file_overrides_env_file_and_cli_overrides_config_file(tmp_path: Path):
    cfg = tmp_path / "my.toml"
    cfg.write_text('chunk_size = 100\nconcurrency = 2\nout_dir = "x/reports"\nbackoff_base_s = 1\n')
    s = load_settings("sandbox", cfg, chunk_size=50, concurrency=None)
    assert s.api_url == "https://sandbox.toloka.dev"
    assert s.chunk_size == 50
    assert s.concurrency == 2
    assert s.out_dir == Path("x/reports")
    assert s.backoff_base_s == 1.0 and isinstance(s.backoff_base_s, float)


def test_each_env_keeps_its_own_ledger_so_sandbox_payouts_never_block_production():
    ledgers = {env: load_settings(env).ledger_path for env in ("local", "sandbox", "production")}
    assert len(set(ledgers.values())) == 3


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        load_settings().chunk_size = 1  # type: ignore[misc]
    assert isinstance(load_settings(), Settings)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("chunk_sise = 10\n", "unknown key 'chunk_sise'"),
        ('chunk_size = "10"\n', "chunk_size must be an integer"),
        ("chunk_size = true\n", "chunk_size must be an integer"),
        ("chunk_size = 0\n", "chunk_size is out of range"),
        ("poll_max_s = 'soon'\n", "poll_max_s must be a number"),
        ('dedupe_policy = "keep-last"\n', "dedupe_policy must be one of"),
        ('api_url = "toloka.dev"\n', "api_url must start with http"),
        ("min_amount_cents = 500\nmax_amount_cents = 100\n", "exceeds max_amount_cents"),
        ("chunk_size = \n", "not valid TOML"),
    ],
)
def test_bad_config_file_is_a_usage_error_naming_file_and_key(tmp_path: Path, text: str, fragment: str):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(UsageError) as exc:
        load_settings("local", cfg)
    assert fragment in str(exc.value)
    if "exceeds" not in fragment:
        assert str(cfg) in str(exc.value)


def test_missing_config_file_and_unknown_env_are_usage_errors(tmp_path: Path):
    with pytest.raises(UsageError, match="not found"):
        load_settings("local", tmp_path / "nope.toml")
    with pytest.raises(UsageError, match="unknown env 'prod'"):
        load_settings("prod")


def test_bad_override_is_a_usage_error():
    with pytest.raises(UsageError, match="overrides: concurrency must be an integer"):
        load_settings("local", concurrency="4")


def test_token_comes_only_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    assert token_from_env(required=False) is None
    with pytest.raises(UsageError, match="set TOLOKA_TOKEN"):
        token_from_env(required=True)
    monkeypatch.setenv("TOLOKA_TOKEN", " abc ")
    assert token_from_env(required=True) == "abc"
