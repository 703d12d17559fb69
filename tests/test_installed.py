"""`payout` as an installed program, not a checkout: build the wheel, install it into a fresh venv, run it from an
empty folder. Catches what only an installation shows: configs missing from the wheel, paths relative to the
source tree, a production run falling back to the embedded sandbox.

The fresh venv gets only our wheel; the heavy dependencies (pandas, pyarrow, aiohttp, ...) come from the test
venv through a .pth line, so nothing is downloaded. The wheel is built once per module (about 5 s in all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "payouts.csv"
SOURCES = ("pyproject.toml", "README.md", "pipeline", "configs")


def _setuptools_can_build_offline() -> bool:
    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except Exception:  # noqa: BLE001 - not installed, or an odd version string
        return False
    return (major, minor) >= (70, 1)  # builds wheels without the separate `wheel` package


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kwargs)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the built wheel of this project (plus the test venv's dependencies); returns its bin/."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so the build leaves no build/ or *.egg-info in the shared work tree
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "HOME": str(root / "home")}
    env.pop("PYTHONPATH", None)
    isolation = ["--no-build-isolation"] if _setuptools_can_build_offline() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(root / "dist"), str(src)],
         env=env, cwd=root)
    [wheel] = (root / "dist").glob("bonus_payout-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], env=env, cwd=root)
    # Only after installing (so pip never sees the checkout's editable install): borrow the dependencies.
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_venv_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    return venv / "bin"


@pytest.fixture
def user(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty working folder and a user's environment: own HOME, no token, no PAYOUT_DATA_DIR, no PYTHONPATH."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TOLOKA_TOKEN", "PAYOUT_DATA_DIR", "XDG_DATA_HOME")}
    env["HOME"] = str(tmp_path / "home")
    return cwd, env


def payout(bin_dir: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "payout"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, user) -> None:
    cwd, env = user
    out = _run([str(installed / "python"), "-c",
                "import pipeline, importlib.resources as r; print(pipeline.__file__); "
                "print(sorted(p.name for p in r.files('pipeline.configs').iterdir() if p.name.endswith('.toml')))"],
               cwd=cwd, env=env).stdout.splitlines()
    assert Path(out[0]).is_relative_to(installed.parent) and not Path(out[0]).is_relative_to(REPO)
    assert out[1] == "['local.toml', 'mappings.toml', 'production.toml', 'sandbox.toml']"


def test_help_works_from_any_folder(installed: Path, user) -> None:
    cwd, env = user
    out = payout(installed, cwd, env, "--help")
    assert out.returncode == 0 and "recover" in out.stdout and "exit codes" in out.stdout


def test_sample_sheet_against_the_embedded_sandbox_writes_into_the_data_dir(installed: Path, user) -> None:
    cwd, env = user
    shutil.copy(SAMPLE, cwd / "payouts.csv")
    data = cwd.parent / "data"
    out = payout(installed, cwd, env, "run", "payouts.csv", "--data-dir", str(data))
    assert out.returncode == 1, out.stderr  # the sample holds invalid and duplicate rows on purpose
    assert f'"data_dir": "{data}"' in out.stderr  # off a terminal: one JSON object a line
    assert len(list((data / "reports").glob("*/summary.json"))) == 1
    assert (data / "ledgers" / "local.sqlite").exists() and (data / "sandbox.sqlite").exists()
    assert files_under(cwd) == [cwd / "payouts.csv"]  # nothing written into the current folder


def test_the_default_data_dir_is_under_home_not_the_current_folder(installed: Path, user) -> None:
    cwd, env = user
    shutil.copy(SAMPLE, cwd / "payouts.csv")
    out = payout(installed, cwd, env, "run", "payouts.csv", "--dry-run")
    assert out.returncode == 1, out.stderr
    data = Path(env["HOME"]) / ".local" / "share" / "payout"
    assert len(list((data / "reports").glob("*/summary.json"))) == 1
    assert files_under(cwd) == [cwd / "payouts.csv"]


def test_production_without_a_token_exits_2_writes_nothing_and_starts_no_sandbox(installed: Path, user) -> None:
    cwd, env = user
    shutil.copy(SAMPLE, cwd / "payouts.csv")
    out = payout(installed, cwd, env, "run", "--env", "production", "payouts.csv", "--batch-id", "b-1")
    assert out.returncode == 2 and "TOLOKA_TOKEN" in out.stderr
    assert "embedded" not in out.stderr
    assert files_under(Path(env["HOME"])) == [] and files_under(cwd) == [cwd / "payouts.csv"]


def test_production_with_a_token_but_no_batch_id_exits_2_and_explains(installed: Path, user) -> None:
    cwd, env = user
    shutil.copy(SAMPLE, cwd / "payouts.csv")
    out = payout(installed, cwd, {**env, "TOLOKA_TOKEN": "not-a-real-token"}, "run", "--env", "production",
                 "payouts.csv")
    assert out.returncode == 2
    assert "needs --batch-id" in out.stderr and "--batch-id payouts-" in out.stderr
    assert files_under(Path(env["HOME"])) == []


def test_an_unwritable_data_dir_exits_2_with_one_line(installed: Path, user, tmp_path: Path) -> None:
    cwd, env = user
    shutil.copy(SAMPLE, cwd / "payouts.csv")
    blocker = tmp_path / "a-file"  # a path under a regular file cannot be created, even by root
    blocker.write_text("")
    unwritable = [blocker / "data"]
    if os.geteuid() != 0:  # root writes through chmod 500, so only check that as a normal user
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        unwritable.append(locked)
    try:
        for data in unwritable:
            out = payout(installed, cwd, env, "run", "payouts.csv", "--data-dir", str(data))
            lines = [line for line in out.stderr.splitlines() if line.strip()]
            assert out.returncode == 2 and len(lines) == 1, out.stderr
            assert str(data) in lines[0] and "--data-dir" in lines[0] and "Traceback" not in out.stderr
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
