"""Settings from defaults, the packaged configs/<env>.toml, --config and CLI overrides, checked before any money moves.

Also the checks a run makes before it sends anything: where its data lives (`data_dir`), which ledger belongs to
which target, whether those folders are writable (`preflight`), and which batch id it pays under
(`resolve_batch_id`).
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import importlib.resources
import os
import re
import string
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.contract import (
    DEDUPE_POLICIES,
    TEXT_COLUMNS,
    DedupePolicy,
    SheetLimits,
    SheetOptions,
    is_sheet_column,
    normalise_header,
)
from pipeline.errors import UsageError
from pipeline.ledger_pg import is_url, redacted

ENVS = ("local", "sandbox", "production")
# The TOML files live in the top-level configs/ folder of the source tree and ship inside the package as
# `pipeline.configs` (pyproject.toml maps the folder), so an installed `payout` finds them from any folder.
CONFIG_PACKAGE = "pipeline.configs"
TOKEN_VAR = "TOLOKA_TOKEN"
TOKEN_FILE_VAR = "TOLOKA_TOKEN_FILE"
DATA_DIR_VAR = "PAYOUT_DATA_DIR"
# Ledger file names (DATA/ledgers/<name>.sqlite) of the known targets; any other URL gets a slug of its own.
LEDGER_NAMES = {"local": "local", "sandbox": "toloka-sandbox", "production": "production"}
BATCH_ID_MAX = 100
TEMPLATE_FIELDS = ("sheet", "date", "env")
DELIMITERS = {",": ",", ";": ";", "|": "|", "tab": "\t", "\\t": "\t", "\t": "\t"}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know except the token (which only ever comes from the environment).

    The path fields may be given as None (or relative); after construction they are absolute paths derived
    from `data_dir`: reports `DATA/reports`, embedded sandbox `DATA/sandbox.sqlite`, ledger
    `DATA/ledgers/<name>.sqlite` where name is per target (`local`, `toloka-sandbox`, `production`, or a slug
    of the API URL). `dataclasses.replace` keeps already derived paths.
    """

    env: str = "local"
    api_url: str | None = None  # None: start the embedded sandbox (env local only)
    chunk_size: int = 5000
    concurrency: int = 4
    request_timeout_s: float = 10.0
    request_deadline_s: float = 60.0  # total time one HTTP exchange may take (each retry gets its own)
    max_retries: int = 8
    backoff_base_s: float = 0.2
    backoff_max_s: float = 30.0
    poll_initial_s: float = 0.05
    poll_max_s: float = 2.0
    max_wait_s: float = 1800.0  # bound on waiting for one operation to finish
    min_amount_cents: int = 1
    max_amount_cents: int = 10000
    dedupe_policy: DedupePolicy = "keep-first"
    allow_repeats: bool = False  # pay rows held as look-alike repeats of a recent payment under another batch
    lookalike_window_h: float = 72.0
    # the spend guard (pipeline/guard.py), in cents; None: no cap. Over any of them a run pays only with
    # --confirm-total equal to its planned total
    max_run_cents: int | None = None  # the run's total
    max_user_run_cents: int | None = None  # one user's total in the run
    confirm_above_cents: int | None = None  # a real run paying more than this needs --confirm-total
    recover_window_days: float = 30.0
    signal_grace_s: float = 20.0
    # a shared PostgreSQL ledger: how long a worker's claim on an operation lasts unless renewed (every third of
    # it); a worker that dies leaves its operations to the others after this long
    claim_lease_s: float = 30.0
    ledger_url: str | None = None  # postgresql://user@host/db: a shared ledger instead of the file ledger_path
    batch_id_template: str | None = None  # e.g. "{sheet}-{date}"; placeholders {sheet}, {date}, {env}
    # reading finance's sheets (see contract.SheetOptions, SheetLimits): None detects, and refuses when unsure
    encoding: str | None = None
    delimiter: str | None = None  # , ; | or tab
    sheet: str | None = None
    header_row: int | None = None
    decimal_comma: bool = False  # amounts written 12,50 and 1 234,50 (a Russian or European locale)
    max_file_mb: float = SheetLimits.max_file_mb
    max_rows: int = SheetLimits.max_rows
    max_columns: int = SheetLimits.max_columns
    max_cell_chars: int = SheetLimits.max_cell_chars
    max_xlsx_cells: int = SheetLimits.max_xlsx_cells
    max_xlsx_unzipped_mb: float = SheetLimits.max_xlsx_unzipped_mb
    # column mappings: [mappings.NAME] tables (sheet header -> our column), from the packaged configs/mappings.toml,
    # configs/<env>.toml and --config (a later file's table replaces an earlier one of the same name); `mapping`
    # names the one applied to this run's sheets (--mapping NAME)
    mapping: str | None = None
    mappings: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # None: $PAYOUT_DATA_DIR, else $XDG_DATA_HOME/payout, else ~/.local/share/payout
    data_dir: Path = None  # type: ignore[assignment]
    ledger_path: Path = None  # type: ignore[assignment]  # None: DATA/ledgers/<target name>.sqlite
    out_dir: Path = None  # type: ignore[assignment]  # None: DATA/reports
    sandbox_db: Path = None  # type: ignore[assignment]  # None: DATA/sandbox.sqlite (embedded sandbox's state)

    def __post_init__(self) -> None:
        api_url = normalise_api_url(self.api_url, "api_url") if self.api_url is not None else None
        data_dir = _absolute(self.data_dir) if self.data_dir is not None else default_data_dir()
        derived = {
            "api_url": api_url,
            "data_dir": data_dir,
            "out_dir": _absolute(self.out_dir) if self.out_dir is not None else data_dir / "reports",
            "sandbox_db": _absolute(self.sandbox_db) if self.sandbox_db is not None else data_dir / "sandbox.sqlite",
            "ledger_path": (_absolute(self.ledger_path) if self.ledger_path is not None
                            else data_dir / "ledgers" / f"{ledger_name(api_url)}.sqlite"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def ledger(self) -> str | Path:
        """Where the ledger is: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.ledger_url if self.ledger_url is not None else self.ledger_path

    @property
    def ledger_label(self) -> str:
        """The ledger's location for messages and reports (a URL without its password)."""
        return redacted(self.ledger_url) if self.ledger_url is not None else str(self.ledger_path)

    def sheet_options(self) -> SheetOptions:
        """How ingest reads this run's sheets."""
        limits = SheetLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SheetLimits)})
        return SheetOptions(encoding=self.encoding, delimiter=self.delimiter, sheet=self.sheet,
                            header_row=self.header_row, limits=limits,
                            mapping=self.mappings[self.mapping] if self.mapping is not None else {},
                            known_mappings=self.mappings)

    @property
    def embedded(self) -> bool:
        """True when `payout` starts its own sandbox server (env local without an api_url)."""
        return self.api_url is None

    @property
    def target_id(self) -> str:
        """What is paid: the normalised API base URL, or `embedded:<absolute sandbox db path>`."""
        return self.api_url if self.api_url is not None else f"embedded:{self.sandbox_db}"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_PATH_FIELDS = {name for name, f in _FIELDS.items() if f.type == "Path"}


def load_settings(env: str = "local", config_file: Path | None = None, **overrides: Any) -> Settings:
    """Merge defaults < packaged configs/<env>.toml < config_file < non-None overrides.

    `data_dir` comes from the override (--data-dir), else $PAYOUT_DATA_DIR, else the config files, else the
    default. Relative paths in a config file are relative to that file's folder; in overrides, to the current
    folder. UsageError names the bad file and key; a missing packaged config is an error, never a fallback.
    """
    if env not in ENVS:
        raise UsageError(f"unknown env {env!r}: choose one of {', '.join(ENVS)}")
    values: dict[str, Any] = dict(_packaged_config(env))
    mappings = {**_packaged_mappings(), **values.pop("mappings", {})}  # merged by name, not replaced whole
    if config_file is not None:
        values.update(from_file := _read_toml(Path(config_file)))
        mappings.update(from_file.get("mappings", {}))
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(checked := _checked(given, "overrides"))
    values["mappings"] = {**mappings, **checked.get("mappings", {})}
    if "ledger_path" in checked:  # --ledger FILE wins over a config's ledger_url (and --ledger URL over its path)
        values.pop("ledger_url", None)
    elif "ledger_url" in checked:
        values.pop("ledger_path", None)
    if "data_dir" not in given and os.environ.get(DATA_DIR_VAR, "").strip():
        values["data_dir"] = _absolute(os.environ[DATA_DIR_VAR].strip())
    values["env"] = env
    if env != "local" and not values.get("api_url"):
        raise UsageError(f"--env {env} has no api_url (its packaged config sets none and neither does --config): "
                         f"{env} never falls back to the embedded sandbox; reinstall payout or pass --api-url")
    settings = Settings(**values)
    if settings.mapping is not None and settings.mapping not in settings.mappings:
        known = ", ".join(sorted(settings.mappings)) or "none"
        raise UsageError(f"unknown mapping {settings.mapping!r} (known: {known}); define it as a [mappings.NAME] "
                         "table of sheet header = column in a --config file")
    if settings.min_amount_cents > settings.max_amount_cents:
        raise UsageError(
            f"min_amount_cents ({settings.min_amount_cents}) exceeds max_amount_cents ({settings.max_amount_cents})"
        )
    return settings


def default_data_dir() -> Path:
    """$PAYOUT_DATA_DIR, else $XDG_DATA_HOME/payout, else ~/.local/share/payout (absolute).

    The default does not depend on the current folder, so a cron job and a manual run share one ledger.
    """
    given = os.environ.get(DATA_DIR_VAR, "").strip()
    if given:
        return _absolute(given)
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return _absolute(xdg) / "payout"
    return _absolute(Path.home() / ".local" / "share" / "payout")


def normalise_api_url(url: str, source: str = "api_url") -> str:
    """Scheme and host lowercased, default port dropped, trailing slash dropped; UsageError if not a base URL."""
    if not isinstance(url, str) or not url.strip().lower().startswith(("http://", "https://")):
        raise UsageError(f"{source} must start with http:// or https://, got {url!r}")
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{source} has an invalid port: {url!r}") from None
    if not parts.hostname:
        raise UsageError(f"{source} has no host: {url!r}")
    if parts.username or parts.password:
        raise UsageError(f"{source} must not carry credentials (the token comes from {TOKEN_VAR}): {url!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"{source} must be a base URL without ?query or #fragment, got {url!r}")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def ledger_name(api_url: str | None) -> str:
    """The ledger's file stem for a target: `local` (embedded sandbox), `toloka-sandbox` and `production` for
    the packaged envs' URLs (whichever flag named them), else a slug of the URL, e.g. `api-127.0.0.1-8000`."""
    if api_url is None:
        return LEDGER_NAMES["local"]
    for env in ENVS:
        shipped = _packaged_config(env).get("api_url")
        if shipped is not None and shipped == api_url:
            return LEDGER_NAMES[env]
    slug = re.sub(r"[^a-z0-9.]+", "-", api_url.split("://", 1)[1].lower()).strip("-.")
    if len(slug) > 80:
        slug = f"{slug[:70]}-{hashlib.sha256(api_url.encode()).hexdigest()[:8]}"
    return f"api-{slug}"


def token_from_env(required: bool) -> str | None:
    """The token from TOLOKA_TOKEN, else from the file TOLOKA_TOKEN_FILE names (e.g. a systemd credential or a
    mounted secret: never the command line, where `ps` shows it); UsageError if required and neither is set."""
    token = os.environ.get(TOKEN_VAR, "").strip()
    if token:
        return token
    path = os.environ.get(TOKEN_FILE_VAR, "").strip()
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{TOKEN_FILE_VAR}={path} cannot be read ({type(e).__name__}): check the path and "
                             "its permissions") from None
        if not token:
            raise UsageError(f"{TOKEN_FILE_VAR}={path} is empty: put the Toloka OAuth token in it")
        return token
    if required:
        raise UsageError(f"set {TOKEN_VAR} to your Toloka OAuth token, or {TOKEN_FILE_VAR} to a file holding it")
    return None


# -- preflight ------------------------------------------------------------------------------------------------


def preflight(settings: Settings, sheets: Sequence[str | Path] = ()) -> None:
    """Before anything is sent: every sheet exists, the ledger and report folders (and the embedded sandbox's
    folder) exist or can be created and are writable, and an existing ledger file is writable.

    Creates missing folders. Raises UsageError (exit 2) with one line naming the path and what to do.
    """
    for sheet in sheets:
        path = Path(sheet)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise UsageError(f"sheet {path} {what}: check the path (relative paths start from {Path.cwd()})")
    if settings.ledger_url is None:  # a PostgreSQL ledger is checked when it is opened (exit 2 if it cannot be)
        _check_ledger_file(settings.ledger_path)
    _writable_dir(settings.out_dir, "report folder", "choose a writable --data-dir, or --out DIR")
    if settings.embedded:
        _writable_dir(settings.sandbox_db.parent, "embedded sandbox folder", "choose a writable --data-dir")


def _check_ledger_file(ledger: Path) -> None:
    _writable_dir(ledger.parent, "ledger folder", "choose a writable --data-dir, or --ledger PATH")
    if ledger.is_dir():
        raise UsageError(f"ledger {ledger} is a folder: pass --ledger the path of a .sqlite file")
    if ledger.exists():
        try:
            with ledger.open("r+b"):
                pass
        except OSError as exc:
            raise UsageError(f"ledger {ledger} is not writable ({exc.strerror or exc}): fix its permissions "
                             f"(the same user must run every payout) or choose another --ledger") from None


def _writable_dir(path: Path, what: str, hint: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the {what} {path} ({exc.strerror or exc}): {hint}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".payout-preflight-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"the {what} {path} is not writable ({exc.strerror or exc}): {hint}") from None


# -- batch ids ------------------------------------------------------------------------------------------------


def resolve_batch_id(given: str | None, settings: Settings, sheets: Sequence[str | Path], embedded: bool) -> str:
    """The batch id a run pays under: `given` (--batch-id), else `settings.batch_id_template` filled in,
    else (embedded sandbox only) the sorted sheet stems joined by "+". Any other target without either is a
    UsageError: a batch id names one payout, like PayPal's sender_batch_id, and must be chosen, not guessed.
    """
    if given is not None:
        return validate_batch_id(given, "--batch-id")
    stems = "+".join(sorted(Path(s).stem for s in sheets))
    template = settings.batch_id_template
    if template is not None:
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        return validate_batch_id(template.format(sheet=stems, date=today, env=settings.env),
                                 f"batch_id_template {template!r}")
    if embedded:
        return validate_batch_id(stems, "the default batch id (the sheet names)")
    example = f"{stems or 'payouts'}-{datetime.now(UTC):%Y-%m-%d}"
    raise UsageError(
        f"a run against {settings.api_url} needs --batch-id: row keys and operation ids depend on it, so the "
        f"same sheet under the same id is never paid twice and a recurring sheet needs a new id each time; "
        f"e.g. --batch-id {example}, or batch_id_template = \"{{sheet}}-{{date}}\" in a --config file")


def validate_batch_id(value: str, source: str = "batch id") -> str:
    """Non-empty, at most 100 characters, printable (no control characters), no surrounding whitespace."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{source}: the batch id must not be empty")
    if len(value) > BATCH_ID_MAX:
        raise UsageError(f"{source}: the batch id has {len(value)} characters, at most {BATCH_ID_MAX} allowed")
    if not value.isprintable():
        raise UsageError(f"{source}: the batch id must be printable text without control characters, got {value!r}")
    if value != value.strip():
        raise UsageError(f"{source}: the batch id must not start or end with whitespace, got {value!r}")
    return value


# -- reading and checking -------------------------------------------------------------------------------------


@functools.cache
def _packaged_config(env: str) -> dict[str, Any]:
    """The checked values of the packaged configs/<env>.toml; UsageError if the installation lacks it."""
    try:
        resource = importlib.resources.files(CONFIG_PACKAGE).joinpath(f"{env}.toml")
        text = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        raise UsageError(f"the packaged config for env {env!r} (configs/{env}.toml, installed as "
                         f"{CONFIG_PACKAGE}) is missing from this installation: reinstall payout") from None
    source = f"packaged configs/{env}.toml"
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: not valid TOML: {exc}") from None
    return _checked(data, source, base=None)


@functools.cache
def _packaged_mappings() -> dict[str, dict[str, str]]:
    """The column mappings every env shares (configs/mappings.toml, a file of [mappings.NAME] tables only)."""
    source = "packaged configs/mappings.toml"
    try:
        text = importlib.resources.files(CONFIG_PACKAGE).joinpath("mappings.toml").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        raise UsageError(f"the packaged column mappings ({source}, installed as {CONFIG_PACKAGE}) are missing "
                         "from this installation: reinstall payout") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: not valid TOML: {exc}") from None
    if set(data) - {"mappings"}:
        raise UsageError(f"{source}: holds only [mappings.NAME] tables, got {', '.join(sorted(set(data) - {'mappings'}))}")
    return dict(_checked(data, source).get("mappings", {}))


def _checked_mappings(value: Any, where: str) -> dict[str, dict[str, str]]:
    """[mappings.NAME] tables: each maps sheet headers to a column payout reads. Both sides are kept normalised
    (`normalise_header`: case, spaces and hyphens do not matter), so ingest compares normalised headers."""
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be tables [mappings.NAME] of \"sheet header\" = \"column\", got {value!r}")
    out: dict[str, dict[str, str]] = {}
    for name, table in value.items():
        if not isinstance(table, dict) or not table:
            raise UsageError(f"{where}.{name} must be a table of \"sheet header\" = \"column\", got {table!r}")
        mapped: dict[str, str] = {}
        for header, column in table.items():
            if not isinstance(column, str):
                raise UsageError(f"{where}.{name}: {header!r} must map to a column name (text), got {column!r}")
            target, key = normalise_header(column), normalise_header(header)
            if not is_sheet_column(target):
                raise UsageError(f"{where}.{name}: {header!r} maps to {column!r}, which is not a column payout reads "
                                 f"(use one of {', '.join(TEXT_COLUMNS)}, or public_title_xx / public_message_xx "
                                 "for one language)")
            if not key:
                raise UsageError(f"{where}.{name}: an empty sheet header maps to {column!r}")
            if mapped.get(key, target) != target:
                raise UsageError(f"{where}.{name}: {header!r} is mapped twice, to {mapped[key]!r} and {target!r}")
            mapped[key] = target
        out[str(name)] = mapped
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    return _checked(data, str(path), base=_absolute(path).parent)


def _checked(data: dict[str, Any], source: str, base: Path | None = None) -> dict[str, Any]:
    """Coerce each value to its field's type; UsageError for unknown keys, wrong types or out-of-range values.

    Relative paths are taken relative to `base` (a config file's folder), or left for Settings to make
    absolute from the current folder when `base` is None.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "ledger_path" and is_url(value):  # `--ledger postgresql://...`: a shared ledger
            key = "ledger_url"
        if key not in _FIELDS or key == "env":
            known = ", ".join(k for k in _FIELDS if k != "env")
            raise UsageError(f"{source}: unknown key {key!r} (known: {known})")
        out[key] = _coerce(key, value, source)
        if key in _PATH_FIELDS and base is not None and not out[key].is_absolute():
            out[key] = base / out[key]
    return out


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _FIELDS[key].type.removesuffix(" | None")
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
        if not value > 0 or value == float("inf"):
            raise UsageError(f"{where} must be a positive number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "mappings":
        return _checked_mappings(value, where)
    if kind == "Path":
        if not isinstance(value, str | Path) or not str(value).strip():
            raise UsageError(f"{where} must be a path string, got {value!r}")
        return Path(value).expanduser()
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string, got {value!r}")
    if key == "dedupe_policy" and value not in DEDUPE_POLICIES:
        raise UsageError(f"{where} must be one of {', '.join(DEDUPE_POLICIES)}, got {value!r}")
    if key == "api_url":
        return normalise_api_url(value, where)
    if key == "ledger_url" and not is_url(value):
        raise UsageError(f"{where} must be a postgresql:// URL, got {value!r}")
    if key == "batch_id_template":
        return _checked_template(value, where)
    if key == "delimiter":
        value = DELIMITERS.get(value.lower(), value)
        if value not in DELIMITERS.values():
            raise UsageError(f"{where} must be one of , ; | tab, got {value!r}")
    if key == "encoding":
        try:
            codecs.lookup(value)
        except LookupError:
            raise UsageError(f"{where}: unknown encoding {value!r} (e.g. utf-8, utf-16, cp1251, cp1252)") from None
    return value


def _checked_template(template: str, where: str) -> str:
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UsageError(f"{where}: {exc} in {template!r}") from None
    for name, spec, conv in fields:
        if name not in TEMPLATE_FIELDS or spec or conv:
            allowed = ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)
            raise UsageError(f"{where} may use only the placeholders {allowed}, got {{{name}}} in {template!r}")
    validate_batch_id(template.format(sheet="sheet", date="2000-01-01", env="local"), where)
    return template


def _absolute(path: str | Path) -> Path:
    """Absolute, with ~ expanded and . / .. folded, without resolving symlinks."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))
