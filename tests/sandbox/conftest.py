"""Sandbox test fixtures, shared with other suites through tests/sandbox_fixtures.py."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox_fixtures import sandbox, sandbox_process  # noqa: E402,F401  (re-exported fixtures)
