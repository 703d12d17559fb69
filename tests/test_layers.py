"""The floors of `pipeline/` (see pipeline/contract.py): stages share a contract, not each other.

Reads every import of every module (module level and inside functions) with `ast` and fails when a stage
imports another stage, an edge or the contract floor imports anything above it, or the core imports the
sandbox (only `cli` may, lazily, for `payout sandbox` and the embedded target).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

CONTRACT = {"contract", "errors", "money", "wire"}
EDGES = {"config", "ledger", "ledger_pg", "toloka", "target", "logs", "progress", "signals"}
STAGES = {"ingest", "validate", "keys", "dedupe", "plan", "execute", "report", "guard", "totals"}
# A stage's own parts (`ingest_csv` of `ingest`): only that stage imports them, and they import what it may.
PARTS = {"ingest_csv": "ingest", "ingest_parquet": "ingest", "ingest_xlsx": "ingest"}
COMPOSERS = {"run", "recover", "audit", "cli", "__main__", "__init__", "status", "html_report", "signoff",
             "export"}
ALLOWED = {
    **{m: CONTRACT for m in CONTRACT},
    **{m: CONTRACT | EDGES for m in EDGES},
    **{m: CONTRACT | EDGES | {p for p, owner in PARTS.items() if owner == m} for m in STAGES},
    **{p: CONTRACT | EDGES for p in PARTS},
}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported pipeline module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith("pipeline."):
                found.append((name.split(".")[1], id(node) in top))
    return found


def modules() -> list[str]:
    return sorted(p.stem for p in PIPELINE.glob("*.py"))


def test_every_module_has_a_floor() -> None:
    unplaced = set(modules()) - CONTRACT - EDGES - STAGES - set(PARTS) - COMPOSERS
    assert not unplaced, f"place these modules on a floor in tests/test_layers.py: {sorted(unplaced)}"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_a_module_imports_only_the_floors_below_it(module: str) -> None:
    wrong = {m for m, _ in imports_of(PIPELINE / f"{module}.py")
             if m != module and m in modules() and m not in ALLOWED[module]}
    assert not wrong, f"{module} imports {sorted(wrong)}: move the shared part to the contract (pipeline/contract.py)"


def test_the_core_never_imports_the_sandbox_except_the_cli_lazily() -> None:
    offenders = [(m, top) for m in modules() for name, top in imports_of(PIPELINE / f"{m}.py") if name == "sandbox"
                 if m != "cli" or top]
    assert not offenders, f"the core imports the sandbox: {offenders}"


def test_payout_commands_other_than_sandbox_never_load_aiohttp() -> None:
    code = ("import sys, pipeline.cli as c; c.build_parser(); import pipeline.run, pipeline.recover, pipeline.audit;"
            " print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'pipeline.sandbox.'))"
            " and m != 'pipeline.sandbox.cli'))")  # the sandbox's flags are declared in a module of their own
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PIPELINE.parent).stdout
    assert out.strip() == "[]"


def test_the_layering_test_can_fail(tmp_path: Path) -> None:
    """A stage importing another stage is caught (so the checks above are not vacuous)."""
    bad = tmp_path / "plan.py"
    bad.write_text("from pipeline.dedupe import conflict_key\n\ndef f():\n    from pipeline.sandbox import x\n")
    assert ("dedupe", True) in imports_of(bad) and ("sandbox", False) in imports_of(bad)
