"""What ``taskdeck up`` supervises, as other processes see it: a status file in the data folder.

``up`` (:mod:`taskdeck.fleet`) rewrites ``<DATA_DIR>/processes.json`` whenever
a process it runs starts, exits or is scheduled for a restart: atomically
(a temporary file renamed over it), so a reader never sees half of it.
``taskdeck status``, the dashboard's banner and ``/metrics`` read it.

A file, not a table: it must be readable while the database is down, and it
describes one machine's ``up``, which is what the data folder belongs to.
It is stale when the ``up`` that wrote it is gone (its pid no longer runs);
:func:`read` then returns None, as when there is no file.

States of a process: ``running``; ``restarting`` (exited, started again
after its back-off); ``crash-looping`` (exited :data:`CRASH_LOOP_EXITS` times
within :data:`CRASH_LOOP_WINDOW` seconds: still restarted, at the longest
back-off, and shown); ``stopped`` (the embedded broker, which is not restarted).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

FILENAME = "processes.json"
#: Exits within CRASH_LOOP_WINDOW seconds that make a process "crash-looping".
CRASH_LOOP_EXITS = 3
CRASH_LOOP_WINDOW = 120.0
STATES = ("running", "restarting", "crash-looping", "stopped")
#: The states that mean "not serving": the dashboard's banner flags them.
FAILING = ("restarting", "crash-looping", "stopped")


def path(data_dir: Path | str) -> Path:
    return Path(data_dir) / FILENAME


def write(data_dir: Path | str, processes: dict[str, dict[str, Any]]) -> None:
    """Replace the status file with ``processes`` (name -> state dict), written by this pid."""
    target = path(data_dir)
    temporary = target.with_name(f".{FILENAME}.{os.getpid()}")
    temporary.write_text(json.dumps({"pid": os.getpid(), "updated": time.time(), "processes": processes}))
    os.replace(temporary, target)


def remove(data_dir: Path | str) -> None:
    path(data_dir).unlink(missing_ok=True)


def read(data_dir: Path | str) -> dict[str, dict[str, Any]] | None:
    """name -> state dict of the running ``up``'s processes; None without a live ``up``."""
    try:
        status = json.loads(path(data_dir).read_text())
        pid = int(status["pid"])
        processes = dict(status["processes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    return processes


def failing(data_dir: Path | str) -> dict[str, dict[str, Any]]:
    """The processes of a live ``up`` that are not serving (see :data:`FAILING`)."""
    return {name: p for name, p in (read(data_dir) or {}).items() if p.get("state") in FAILING}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def table(processes: dict[str, dict[str, Any]]) -> Any:
    """A rich Table of ``processes`` for ``taskdeck status``."""
    from rich.table import Table

    out = Table(title="Processes (taskdeck up on this host)", title_justify="left")
    for column in ("process", "state", "pid", "restarts", "last exit"):
        out.add_column(column)
    for name, process in sorted(processes.items()):
        state = str(process.get("state"))
        style = "red" if state in FAILING else "green"
        code = process.get("last_exit_code")
        last = "" if code is None else f"code {code}: {process.get('last_reason') or ''}"
        out.add_row(
            name,
            f"[{style}]{state}[/{style}]",
            str(process.get("pid") or ""),
            str(process.get("restarts")),
            last,
        )
    return out
