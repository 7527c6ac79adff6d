"""django-celery-results' own unit suite, assertions untouched, against each of our result backends.

The suite comes from django-celery-results' sdist (it ships ``t/``), fetched
by pip for the installed version into ``build/peer/`` once. It runs in a
subprocess (its own project settings, on our PostgreSQL or a SQLite file,
tests/results/peer/settings.py) with tests/results/peer/plugin.py building
our backend where it builds its own. Stock ``django-db`` runs too, as the
control. Every test the suite has must pass, except those listed here —
each listed one must fail (a difference that went away is a stale entry),
and docs/results.md says why for each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from importlib import metadata
from pathlib import Path

import pytest

from tests.support.services import ROOT

PEER = "django-celery-results"
CACHE = ROOT / "build" / "peer"
DATABASE = "t/unit/backends/test_database.py::test_DatabaseBackend::"

#: Tests that fail for every taskdeck backend, and why (docs/results.md, "The peer's own suite").
DIFFERENCES = {
    DATABASE + "test_backend__task_result_date": (
        "STARTED is held back RESULTS['STARTED_DELAY'] (50 ms) and stored only for a task still "
        "running then; mark_as_started() followed at once by a read sees PENDING"
    ),
}
#: Tests that fail on SQLite with every backend, stock included: the suite's own.
SQLITE_OWN = {
    "t/unit/test_models.py::test_Models::test_store_result": (
        "writes through a second connection while the first holds a write transaction: SQLite "
        "has one writer at a time (database is locked)"
    ),
}
BACKENDS = ("stock", "direct", "write-behind", "record")


def expected_failures(backend: str, database: str) -> dict[str, str]:
    expected = dict(SQLITE_OWN) if database == "sqlite" else {}
    if backend != "stock":
        expected.update(DIFFERENCES)
    return expected


@pytest.fixture(scope="session")
def peer_suite() -> Path:
    """The sdist's ``t/`` and ``setup.cfg`` for the installed version, fetched by pip once."""
    version = metadata.version(PEER)
    home = CACHE / f"{PEER}-{version}"
    if (home / "t" / "unit").is_dir():
        return home
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
            + ["--dest", tmp, f"{PEER}=={version}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if pip.returncode != 0:
            pytest.fail(
                f"pip could not fetch the {PEER} {version} sdist from the package index:\n{pip.stderr}"
            )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        unpacked = Path(tmp) / "suite"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] in (["t"], ["setup.cfg"])]
            tar.extractall(unpacked, members=members, filter="data")
        (top,) = unpacked.iterdir()
        shutil.rmtree(home, ignore_errors=True)
        top.rename(home)
    return home


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'peer.sqlite3'}"
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/taskdeck")


def run_suite(
    suite: Path,
    backend: str,
    database: str,
    redis_url: str,
    report: Path,
    tests: str = "t/unit",
    env_extra: dict[str, str] | None = None,
) -> tuple[dict[str, str], str]:
    """Run the peer's ``tests``: each test's outcome (``failed`` if any phase failed), and its output."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TASKDECK_PEER_BACKEND": backend,
        "TASKDECK_PEER_DATABASE_URL": database,
        "TASKDECK_PEER_TEST_DB": f"{os.environ.get('TASKDECK_TEST_DB', 'test_taskdeck')}_peer",
        "TASKDECK_PEER_REDIS_URL": redis_url,
        "TASKDECK_PEER_KEY_PREFIX": f"taskdeck:peer:{uuid.uuid4().hex[:8]}:",
        "TASKDECK_PEER_REPORT": str(report),
        **(env_extra or {}),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    argv = [sys.executable, "-m", "pytest", tests, "-q", "-p", "no:cacheprovider"]
    argv += ["--ds", "tests.results.peer.settings", "-p", "tests.results.peer.plugin"]
    # Plugins of our own suite the peer's does not use: half the run's CPU, at import.
    argv += ["-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    run = subprocess.run(argv, cwd=suite, env=env, capture_output=True, text=True, timeout=900)
    outcomes: dict[str, str] = {}
    collected = 0
    for line in report.read_text().splitlines() if report.exists() else []:
        entry = json.loads(line)
        if "collected" in entry:
            collected = entry["collected"]
        elif outcomes.get(entry["test"]) != "failed":
            outcomes[entry["test"]] = entry["outcome"]
    output = f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert collected > 0 and len(outcomes) >= collected, f"the peer suite did not run:\n{output}"
    return outcomes, output


@pytest.mark.parametrize("database", ["postgresql", "sqlite"], indirect=True)
@pytest.mark.parametrize("backend", BACKENDS)
def test_peer_suite(peer_suite: Path, backend: str, database: str, broker: str, tmp_path: Path) -> None:
    # The hold far longer than any of the suite's mark-then-read: on a busy machine a 50 ms hold
    # could run out between the two, and the machine's speed, not the backend, decided the test.
    held = {"TASKDECK_PEER_STARTED_DELAY": "5"}
    report = tmp_path / "report.jsonl"
    outcomes, output = run_suite(peer_suite, backend, database, broker, report, "t/unit", held)
    failed = {test for test, outcome in outcomes.items() if outcome == "failed"}
    expected = expected_failures(backend, "sqlite" if database.startswith("sqlite") else "postgresql")
    assert failed - set(expected) == set(), f"unexpected failures; the suite said:\n{output}"
    assert set(expected) - failed == set(), "listed differences that no longer fail: remove them"
    assert all(outcome in ("passed", "failed") for outcome in outcomes.values()), outcomes
    print(
        f"{backend} on {database.split(':')[0]}: {len(outcomes) - len(failed)} passed, {len(failed)} failed"
    )


@pytest.mark.parametrize("backend", ["direct", "write-behind", "record"])
def test_the_started_difference_is_the_hold_alone(
    peer_suite: Path, backend: str, broker: str, tmp_path: Path
):
    """With every STARTED stored at once (``STARTED_DELAY = 0``), the listed STARTED test passes."""
    (test,) = DIFFERENCES
    database = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/taskdeck")
    outcomes, output = run_suite(
        peer_suite,
        backend,
        database,
        broker,
        tmp_path / "report.jsonl",
        test,
        {"TASKDECK_PEER_STARTED_DELAY": "0"},
    )
    assert outcomes == {test: "passed"}, output
