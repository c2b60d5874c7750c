"""Lint, format and type checks, run as the CI runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ticker import ROOT

CHECKS = {
    "ruff check": ["-m", "ruff", "check", "ticker", "tests"],
    "ruff format": ["-m", "ruff", "format", "--check", "ticker", "tests"],
    "mypy": ["-m", "mypy"],  # files and strictness come from pyproject.toml
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_code_passes(name: str) -> None:
    done = subprocess.run(
        [sys.executable, *CHECKS[name]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
