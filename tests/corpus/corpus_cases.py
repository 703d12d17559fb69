"""Every case of every `cases_<area>.py` module, names checked unique."""

from __future__ import annotations

import importlib
from pathlib import Path

from case import Case

HERE = Path(__file__).resolve().parent


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for module in sorted(HERE.glob("cases_*.py")):
        cases += importlib.import_module(module.stem).CASES
    names = [c.file for c in cases]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert not repeated, f"corpus file names repeat: {repeated}"
    return cases
