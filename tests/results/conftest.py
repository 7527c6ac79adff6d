"""A SQLite database file shared by a worker and a client process (PostgreSQL: tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.results.checks import CHECKS
from tests.support.services import ROOT

#: Loads the tasks of these tests into the workers the tests start.
TASKS = ["-I", "tests.results.tasks"]


def run_checks(env: dict[str, str], worker: str) -> None:
    """Every check of tests/results/checks.py in a client process with ``env``, against ``worker``."""
    client = subprocess.run(
        [sys.executable, "-m", "tests.results.checks", worker],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert client.returncode == 0, client.stdout + client.stderr
    assert client.stdout.count("ok ") == len(CHECKS), client.stdout


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``sqlite:////tmp/.../db.sqlite3``, migrated by ``manage.py migrate`` in a subprocess."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'db.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "core.settings"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=300
    )
    assert Path(url.removeprefix("sqlite:///")).exists()
    return url
