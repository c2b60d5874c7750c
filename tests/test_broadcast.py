"""The broadcaster and the socket write path, without gunicorn: each case under gevent.

The cases (``tests/gevent_cases.py``) patch their process as gunicorn's gevent
worker does, so each runs in a subprocess of its own; this module only
collects them by name (importing them would patch the test process).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ticker import ROOT

CASES_FILE = Path(__file__).with_name("gevent_cases.py")
CASES = [
    node.name[5:]
    for node in ast.parse(CASES_FILE.read_text()).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("case_")
]


@pytest.mark.parametrize("case", CASES)
def test_under_gevent(case: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.gevent_cases", case, str(tmp_path / "log.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
