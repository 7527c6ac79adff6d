"""Celery workers and other processes of a bench pass: started as subprocesses, stopped for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The bench's environment for a child, the project importable, ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CELERY_SKIP_CHECKS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def worker_argv(app: str, queues: list[str], concurrency: int, name: str, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", ",".join(queues)]
    argv += ["-P", "prefork", "-c", str(concurrency), "-n", f"{name}@%h", "-l", "warning"]
    argv += ["--without-mingle", "--without-gossip", "--without-heartbeat", *extra]
    return argv


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` for the duration of the block (output to ``log``); SIGTERM, then SIGKILL, at the end."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    procs: list[subprocess.Popen[bytes]],
    log: Path,
) -> None:
    """Poll ``predicate`` every 5 ms; fail naming ``what`` (and the log) if a process died or time ran out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a process exited with {proc.returncode} waiting for {what}; see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}; see {log}")
        time.sleep(0.005)


def rss_kib(pid: int) -> int | None:
    """Resident memory of one process (VmRSS), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a worker's pool processes)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found
