"""One sheet of the corpus and what `payout run` must make of it.

Each `cases_<area>.py` module lists `CASES`. A case's sheet is either a file under `tests/corpus/sheets/` (text
sheets a person can open and read) or written by a function (binary sheets: .xlsx, UTF-16, cp1251), so
`python tests/corpus/build.py DIR` writes the whole corpus for a person to open in Excel or LibreOffice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SHEETS = Path(__file__).resolve().parent / "sheets"


TITLE = '{"EN": "Thanks"}'
MESSAGE = '{"EN": "Bonus for week 48"}'


def uid(n: int) -> str:
    """A user id the sandbox knows (32 lowercase hex characters)."""
    return f"{n:032x}"


@dataclass(frozen=True)
class Case:
    """`file`: the sheet's file name (its suffix picks the reader). `write`: writes the sheet to the path it is
    given; without it the sheet is `tests/corpus/sheets/<file>`.

    The outcome: `exit` code; `says`: texts the output must contain (for exit 2, the message naming the fix);
    `paid`: (user id, amount as "12.50") the server must hold afterwards, each once, and nothing else;
    `errors`: (spreadsheet row, column, text in the error's code or message) that rows.parquet must show;
    `statuses`: spreadsheet row -> status in rows.parquet; `rows`: how many rows rows.parquet holds.
    `config`: TOML text written beside the sheet (`<file>.toml`) and passed as `--config` (e.g. spend caps).
    """

    file: str
    exit: int
    args: tuple[str, ...] = ()
    write: Callable[[Path], None] | None = None
    says: tuple[str, ...] = ()
    paid: tuple[tuple[str, str], ...] = ()
    errors: tuple[tuple[int, str, str], ...] = ()
    statuses: dict[int, str] = field(default_factory=dict)
    rows: int | None = None
    about: str = ""
    config: str | None = None

    @property
    def id(self) -> str:
        return self.file

    def config_args(self, folder: Path) -> tuple[str, ...]:
        """`--config FILE` with `config` written to `folder/<file>.toml`, or nothing."""
        if self.config is None:
            return ()
        path = folder / f"{self.file}.toml"
        path.write_text(self.config, encoding="utf-8")
        return ("--config", str(path))

    def materialise(self, folder: Path) -> Path:
        """The sheet as a file in `folder` (written, or copied from tests/corpus/sheets)."""
        path = folder / self.file
        if self.write is not None:
            self.write(path)
        else:
            path.write_bytes((SHEETS / self.file).read_bytes())
        return path
