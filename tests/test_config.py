from __future__ import annotations

import importlib.resources
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import config
from pipeline.config import (
    Settings,
    default_data_dir,
    load_settings,
    normalise_api_url,
    preflight,
    resolve_batch_id,
    token_from_env,
    validate_batch_id,
)
from pipeline.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def test_local_has_no_api_url_so_the_embedded_sandbox_runs():
    s = load_settings("local")
    assert s.env == "local" and s.api_url is None and s.embedded
    assert s.chunk_size == 5000 and s.concurrency == 4 and s.dedupe_policy == "keep-first"


def test_sandbox_and_production_point_at_toloka_base_hosts():
    assert load_settings("sandbox").api_url == "https://sandbox.toloka.dev"
    assert load_settings("production").api_url == "https://toloka.dev"


def test_env_configs_are_read_from_the_package_and_match_the_top_level_configs_folder():
    packaged = importlib.resources.files("pipeline.configs")
    for env in ("local", "sandbox", "production"):
        assert packaged.joinpath(f"{env}.toml").read_text() == (REPO / "configs" / f"{env}.toml").read_text()


def test_a_missing_packaged_config_is_an_error_never_a_fallback(monkeypatch: pytest.MonkeyPatch, request):
    monkeypatch.setattr(config, "CONFIG_PACKAGE", "pipeline.no_such_configs")
    config._packaged_config.cache_clear()
    request.addfinalizer(config._packaged_config.cache_clear)  # errors are not cached; be sure anyway
    with pytest.raises(UsageError, match="packaged config for env 'production'.*reinstall"):
        load_settings("production")


def test_sandbox_and_production_without_an_api_url_never_fall_back_to_the_embedded_sandbox(
        monkeypatch: pytest.MonkeyPatch):
    real = config._packaged_config
    monkeypatch.setattr(config, "_packaged_config", lambda env: {} if env == "production" else real(env))
    with pytest.raises(UsageError, match="--env production has no api_url.*never falls back"):
        load_settings("production")


def test_config_file_overrides_env_file_and_cli_overrides_config_file(tmp_path: Path):
    cfg = tmp_path / "my.toml"
    cfg.write_text('chunk_size = 100\nconcurrency = 2\nout_dir = "x/reports"\nbackoff_base_s = 1\n')
    s = load_settings("sandbox", cfg, chunk_size=50, concurrency=None)
    assert s.api_url == "https://sandbox.toloka.dev"
    assert s.chunk_size == 50
    assert s.concurrency == 2
    assert s.out_dir == tmp_path / "x/reports"  # relative to the config file's folder, not the current one
    assert s.backoff_base_s == 1.0 and isinstance(s.backoff_base_s, float)


def test_new_settings_have_defaults_and_are_overridable_by_config_files(tmp_path: Path):
    s = load_settings("local")
    assert (s.max_wait_s, s.request_deadline_s, s.allow_repeats, s.lookalike_window_h, s.recover_window_days,
            s.signal_grace_s, s.batch_id_template) == (1800.0, 60.0, False, 72.0, 30.0, 20.0, None)
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_wait_s = 5\nrequest_deadline_s = 7.5\nallow_repeats = true\nlookalike_window_h = 1\n"
                   "recover_window_days = 2\nsignal_grace_s = 3\nbatch_id_template = \"{sheet}-{date}\"\n")
    s = load_settings("local", cfg)
    assert (s.max_wait_s, s.request_deadline_s, s.allow_repeats, s.lookalike_window_h, s.recover_window_days,
            s.signal_grace_s, s.batch_id_template) == (5.0, 7.5, True, 1.0, 2.0, 3.0, "{sheet}-{date}")
    assert isinstance(s.max_wait_s, float)


# -- data dir and derived paths --------------------------------------------------------------------------------


def test_every_path_derives_from_the_data_dir_and_is_absolute(hermetic_data_dir: Path):
    s = load_settings("local")
    assert s.data_dir == hermetic_data_dir
    assert s.out_dir == hermetic_data_dir / "reports"
    assert s.sandbox_db == hermetic_data_dir / "sandbox.sqlite"
    assert s.ledger_path == hermetic_data_dir / "ledgers" / "local.sqlite"
    assert all(p.is_absolute() for p in (s.data_dir, s.out_dir, s.sandbox_db, s.ledger_path))
    assert not hermetic_data_dir.exists()  # loading settings creates nothing; preflight does


def test_each_target_keeps_its_own_ledger_so_sandbox_payouts_never_block_production(hermetic_data_dir: Path):
    ledgers = {env: load_settings(env).ledger_path for env in ("local", "sandbox", "production")}
    assert ledgers == {"local": hermetic_data_dir / "ledgers/local.sqlite",
                       "sandbox": hermetic_data_dir / "ledgers/toloka-sandbox.sqlite",
                       "production": hermetic_data_dir / "ledgers/production.sqlite"}


def test_api_url_gets_a_ledger_of_its_own_never_the_play_one(hermetic_data_dir: Path):
    s = load_settings("local", api_url="HTTP://127.0.0.1:8000/")
    assert s.api_url == "http://127.0.0.1:8000" and not s.embedded
    assert s.ledger_path == hermetic_data_dir / "ledgers" / "api-127.0.0.1-8000.sqlite"
    assert s.target_id == "http://127.0.0.1:8000"


def test_a_known_toloka_url_shares_its_env_ledger_whichever_flag_names_it():
    assert load_settings("local", api_url="https://TOLOKA.dev:443/").ledger_path == \
        load_settings("production").ledger_path
    assert load_settings("production", api_url="https://sandbox.toloka.dev").ledger_path == \
        load_settings("sandbox").ledger_path


def test_target_id_of_the_embedded_sandbox_names_its_db(tmp_path: Path):
    s = load_settings("local", data_dir=tmp_path / "d")
    assert s.target_id == f"embedded:{tmp_path / 'd' / 'sandbox.sqlite'}"


@pytest.mark.parametrize(("url", "normal"), [
    ("https://Toloka.DEV/", "https://toloka.dev"),
    ("https://toloka.dev:443", "https://toloka.dev"),
    ("http://localhost:80/", "http://localhost"),
    ("http://127.0.0.1:8000//", "http://127.0.0.1:8000"),
    ("https://example.com:8443/Base/", "https://example.com:8443/Base"),
    ("http://[::1]:9000", "http://[::1]:9000"),
])
def test_api_urls_are_normalised(url: str, normal: str):
    assert normalise_api_url(url) == normal


@pytest.mark.parametrize("url", ["toloka.dev", "ftp://x", "https://", "https://u:p@toloka.dev",
                                 "https://toloka.dev/?x=1", "http://h:99999"])
def test_bad_api_urls_are_usage_errors(url: str):
    with pytest.raises(UsageError, match="api_url"):
        normalise_api_url(url, "api_url")


def test_data_dir_precedence_flag_then_env_var_then_config_then_xdg_then_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "conf" / "c.toml"
    cfg.parent.mkdir()
    cfg.write_text('data_dir = "from-config"\n')
    monkeypatch.setenv("PAYOUT_DATA_DIR", str(tmp_path / "from-env"))
    assert load_settings("local", cfg, data_dir=tmp_path / "from-flag").data_dir == tmp_path / "from-flag"
    assert load_settings("local", cfg).data_dir == tmp_path / "from-env"
    monkeypatch.delenv("PAYOUT_DATA_DIR")
    assert load_settings("local", cfg).data_dir == tmp_path / "conf" / "from-config"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings("local").data_dir == default_data_dir() == tmp_path / "xdg" / "payout"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: ignore a relative value
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings("local").data_dir == tmp_path / "home" / ".local" / "share" / "payout"


def test_relative_flags_are_taken_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings("local", data_dir=Path("d"), ledger_path=Path("l.sqlite"), out_dir=Path("r"))
    assert (s.data_dir, s.ledger_path, s.out_dir) == (tmp_path / "d", tmp_path / "l.sqlite", tmp_path / "r")


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        load_settings().chunk_size = 1  # type: ignore[misc]
    assert isinstance(load_settings(), Settings)


def test_settings_built_directly_are_resolved_the_same_way(hermetic_data_dir: Path):
    s = Settings(api_url="http://127.0.0.1:9/")
    assert s.api_url == "http://127.0.0.1:9" and s.ledger_path == hermetic_data_dir / "ledgers/api-127.0.0.1-9.sqlite"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("chunk_sise = 10\n", "unknown key 'chunk_sise'"),
        ('chunk_size = "10"\n', "chunk_size must be an integer"),
        ("chunk_size = true\n", "chunk_size must be an integer"),
        ("chunk_size = 0\n", "chunk_size is out of range"),
        ("poll_max_s = 'soon'\n", "poll_max_s must be a number"),
        ("max_wait_s = 0\n", "max_wait_s must be a positive number"),
        ("request_deadline_s = -1\n", "request_deadline_s must be a positive number"),
        ('allow_repeats = "yes"\n', "allow_repeats must be true or false"),
        ('batch_id_template = "{sheet}-{week}"\n', "batch_id_template may use only the placeholders"),
        ('batch_id_template = "{sheet!r}"\n', "batch_id_template may use only the placeholders"),
        ('batch_id_template = "{sheet"\n', "batch_id_template"),
        ('batch_id_template = "a\\tb"\n', "batch_id_template"),
        ("data_dir = 3\n", "data_dir must be a path string"),
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


# -- preflight -------------------------------------------------------------------------------------------------


def test_preflight_creates_the_folders_it_needs(tmp_path: Path):
    sheet = tmp_path / "s.csv"
    sheet.write_text("user_id,amount\n")
    s = load_settings("local", data_dir=tmp_path / "new" / "data")
    preflight(s, [sheet])
    assert s.ledger_path.parent.is_dir() and s.out_dir.is_dir() and s.sandbox_db.parent.is_dir()
    assert not s.ledger_path.exists()
    assert not [p for p in (tmp_path / "new").rglob("*") if p.is_file()]  # its write probes are gone


def test_preflight_names_a_missing_sheet(tmp_path: Path):
    s = load_settings("local", data_dir=tmp_path / "d")
    with pytest.raises(UsageError, match=r"sheet .*nope\.csv does not exist: check the path"):
        preflight(s, [tmp_path / "nope.csv"])
    with pytest.raises(UsageError, match="is a folder, not a file"):
        preflight(s, [tmp_path])


def test_preflight_refuses_a_data_dir_that_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    s = load_settings("local", data_dir=blocker / "data")
    with pytest.raises(UsageError) as exc:
        preflight(s)
    message = str(exc.value)
    assert "\n" not in message and str(blocker / "data" / "ledgers") in message and "--data-dir" in message


def test_preflight_refuses_a_ledger_that_is_a_folder(tmp_path: Path):
    (tmp_path / "l.sqlite").mkdir()
    s = load_settings("local", data_dir=tmp_path, ledger_path=tmp_path / "l.sqlite")
    with pytest.raises(UsageError, match="is a folder"):
        preflight(s)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the under-a-file case covers root")
def test_preflight_refuses_unwritable_folders_and_ledgers(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="not writable"):
            preflight(load_settings("local", data_dir=locked))
    finally:
        locked.chmod(0o700)
    ledger = tmp_path / "l.sqlite"
    ledger.write_bytes(b"")
    ledger.chmod(0o400)
    with pytest.raises(UsageError, match=r"ledger .* is not writable"):
        preflight(load_settings("local", data_dir=tmp_path, ledger_path=ledger))


# -- batch ids ---------------------------------------------------------------------------------------------------


def test_embedded_default_batch_id_is_the_sorted_sheet_stems():
    s = load_settings("local")
    assert resolve_batch_id(None, s, ["b.csv", "x/a.xlsx"], embedded=True) == "a+b"
    assert resolve_batch_id(None, s, ["x/a.xlsx", "b.csv"], embedded=True) == "a+b"


def test_a_given_batch_id_wins():
    assert resolve_batch_id("bonuses-w48", load_settings("production"), ["p.csv"], embedded=False) == "bonuses-w48"


def test_other_targets_need_a_batch_id_and_are_told_why_with_an_example():
    with pytest.raises(UsageError) as exc:
        resolve_batch_id(None, load_settings("production"), ["payouts.csv"], embedded=False)
    message = str(exc.value)
    assert "needs --batch-id" in message and "never paid twice" in message and "--batch-id payouts-20" in message
    assert "batch_id_template" in message and "\n" not in message


def test_batch_id_template_fills_sheet_date_and_env(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('batch_id_template = "{env}/{sheet}/{date}"\n')
    s = load_settings("production", cfg)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert resolve_batch_id(None, s, ["z.csv", "a.csv"], embedded=False) == f"production/a+z/{today}"
    assert resolve_batch_id("explicit", s, ["z.csv"], embedded=False) == "explicit"


@pytest.mark.parametrize(("value", "fragment"), [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("x" * 101, "at most 100"),
    ("a\x00b", "printable"),
    ("a\nb", "printable"),
    (" lead", "whitespace"),
])
def test_bad_batch_ids_are_usage_errors(value: str, fragment: str):
    with pytest.raises(UsageError, match=fragment):
        validate_batch_id(value, "--batch-id")
    with pytest.raises(UsageError, match=fragment):
        resolve_batch_id(value, load_settings("local"), ["p.csv"], embedded=True)


def test_good_batch_ids_pass_unchanged():
    for value in ("x" * 100, "bonuses 2026-11 (w48)", "премия-ноябрь", "a+b"):
        assert validate_batch_id(value) == value
