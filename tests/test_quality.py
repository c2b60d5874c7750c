"""Lint, format and type checks, run as the CI runs them, and what a built wheel holds."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

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


def _build_wheel(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Build the project in ``source`` into a wheel in ``out``, offline when it can."""
    try:
        own = Version(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        own = Version("0")
    # From 70.1 setuptools builds wheels itself; an older one (a venv's own) cannot,
    # so pip fetches pyproject's setuptools into an isolated build environment.
    isolation = ["--no-build-isolation"] if own >= Version("70.1") else []
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_wheel_holds_every_package_and_the_static_files(tmp_path: Path) -> None:
    # A copy, so that the build's build/ and egg-info never land in the work tree.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "ticker", source / "ticker", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = _build_wheel(source, tmp_path / "dist")
    if (
        done.returncode != 0
        and "No matching distribution found for setuptools" in done.stdout + done.stderr
    ):
        pytest.skip("cannot build a wheel offline: no setuptools>=70.1 here, and none to fetch")
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("ticker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        held = set(archive.namelist())
    needed = [
        "ticker/stream/broadcast.py",
        "ticker/config/__init__.py",
        "ticker/loadtest/__init__.py",
        "ticker/static/ticker.js",
        "ticker/sources/samples/ticks.csv",
    ]
    # Every package under ticker/ and every static file, so that a new one cannot be left out.
    needed += [p.relative_to(ROOT).as_posix() for p in (ROOT / "ticker").rglob("__init__.py")]
    static = (ROOT / "ticker/static").rglob("*")
    needed += [p.relative_to(ROOT).as_posix() for p in static if p.is_file()]
    missing = sorted(set(needed) - held)
    assert not missing, f"the wheel lacks {missing}: add them to pyproject's [tool.setuptools]"
