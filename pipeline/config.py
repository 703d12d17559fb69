"""Settings from defaults, configs/<env>.toml, --config and CLI overrides, checked before any money moves."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError

ENVS = ("local", "sandbox", "production")
DEDUPE_POLICIES = ("keep-first", "reject-all")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TOKEN_VAR = "TOLOKA_TOKEN"


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know except the token (which only ever comes from the environment)."""

    env: str = "local"
    api_url: str | None = None  # None: start the embedded sandbox
    chunk_size: int = 5000
    concurrency: int = 4
    request_timeout_s: float = 10.0
    max_retries: int = 8
    backoff_base_s: float = 0.2
    backoff_max_s: float = 30.0
    poll_initial_s: float = 0.05
    poll_max_s: float = 2.0
    min_amount_cents: int = 1
    max_amount_cents: int = 10000
    dedupe_policy: str = "keep-first"
    ledger_path: Path = Path("data/ledger.sqlite")
    out_dir: Path = Path("data/reports")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def load_settings(env: str = "local", config_file: Path | None = None, **overrides: Any) -> Settings:
    """Merge defaults < configs/<env>.toml < config_file < non-None overrides; UsageError names the bad file and key."""
    if env not in ENVS:
        raise UsageError(f"unknown env {env!r}: choose one of {', '.join(ENVS)}")
    values: dict[str, Any] = {"env": env}
    env_file = CONFIG_DIR / f"{env}.toml"
    if env_file.exists():
        values.update(_read_toml(env_file))
    if config_file is not None:
        values.update(_read_toml(Path(config_file)))
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(_checked(given, "overrides"))
    values["env"] = env
    settings = Settings(**values)
    if settings.min_amount_cents > settings.max_amount_cents:
        raise UsageError(
            f"min_amount_cents ({settings.min_amount_cents}) exceeds max_amount_cents ({settings.max_amount_cents})"
        )
    return settings


def token_from_env(required: bool) -> str | None:
    """The token from TOLOKA_TOKEN (never a file, so it never lands in a repo); UsageError if required and unset."""
    token = os.environ.get(TOKEN_VAR, "").strip()
    if token:
        return token
    if required:
        raise UsageError(f"set {TOKEN_VAR} to your Toloka OAuth token (read from the environment only, never a file)")
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    return _checked(data, str(path))


def _checked(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Coerce each value to its field's type; UsageError for unknown keys, wrong types or out-of-range values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS or key == "env":
            known = ", ".join(k for k in _FIELDS if k != "env")
            raise UsageError(f"{source}: unknown key {key!r} (known: {known})")
        out[key] = _coerce(key, value, source)
    return out


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _FIELDS[key].type
    where = f"{source}: {key}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be an integer, got {value!r}")
        if value < (0 if key.endswith("_cents") or key == "max_retries" else 1):
            raise UsageError(f"{where} is out of range: {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{where} must be a number, got {value!r}")
        if value <= 0:
            raise UsageError(f"{where} must be positive, got {value!r}")
        return float(value)
    if kind == "Path":
        if not isinstance(value, str | Path):
            raise UsageError(f"{where} must be a path string, got {value!r}")
        return Path(value)
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string, got {value!r}")
    if key == "dedupe_policy" and value not in DEDUPE_POLICIES:
        raise UsageError(f"{where} must be one of {', '.join(DEDUPE_POLICIES)}, got {value!r}")
    if key == "api_url":
        if not value.startswith(("http://", "https://")):
            raise UsageError(f"{where} must start with http:// or https://, got {value!r}")
        return value.rstrip("/")
    return value
