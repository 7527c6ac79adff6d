"""A short soak through the whole stack: memory flat in every process, no error anywhere.

Runs ``python -m bench soak`` (bench/soak.py: ``taskdeck up`` with its
embedded Redis, worker groups, beat, recorder and web server, on a
PostgreSQL database of its own) with a few thousand tasks. The 100,000-task
run is the same command with its default count; its figures are in
docs/reliability.md.

Flat means: from the end of the warm-up (20 % of the tasks) to the end, no
process grew by more than ``max(GROWTH_MIB, GROWTH_SHARE × its size)``. A leak
the size of Flower's (about 7 KiB a task) would grow a process by ~20 MiB
over the span measured here.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.faults.harness import report
from tests.support.services import ARTIFACTS, ROOT

TASKS = 5000
GROWTH_MIB = 8.0
GROWTH_SHARE = 0.10


def test_soak_through_the_whole_stack_keeps_memory_flat_and_has_no_errors(pg):
    out = ARTIFACTS / "faults-soak-run.json"
    server = pg.rsplit("/", 1)[0] + "/postgres"
    command = [sys.executable, "-m", "bench", "soak", "--tasks", str(TASKS), "--database-url", server]
    command += ["--json", str(out), "--log", str(ARTIFACTS / "faults-soak-up.log"), "--sample", "1"]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    result = json.loads(out.read_text())
    memory = result["memory"]
    too_much = {
        role: m["growth_mib"]
        for role, m in memory.items()
        if m["growth_mib"] > max(GROWTH_MIB, GROWTH_SHARE * m["after_warmup_mib"])
    }
    report("soak", {k: v for k, v in result.items() if k != "samples"} | {"grew_too_much": too_much})

    roles = {"recorder", "web", "web workers", "worker lanes", "worker lanes pool"}
    assert roles <= set(memory), sorted(memory)
    assert too_much == {}, f"memory grew: {too_much}"
    assert result["failed_tasks"] == 0
    assert result["missing_from_history"] == 0
    assert result["http_errors"] == 0, result["http_statuses"]
    assert result["log_error_lines"] == 0, result["log_error_samples"]
