"""The recorder's commands under ``taskdeck``: their own options reach them (`monitor --name b`)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.services import ROOT


def taskdeck(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "taskdeck.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_options_of_the_recorder_commands_reach_them() -> None:
    for command, option in [
        ("monitor", "--name"),
        ("status", "--window"),
        ("top", "--help"),
        ("rebuild-rollups", "--since"),
    ]:
        shown = taskdeck(command, "--help")
        assert shown.returncode == 0 and option in shown.stdout, (command, shown.stderr)
        assert f"usage: taskdeck {command}" in shown.stdout
    # A bad value is the command's own error, not "unrecognized arguments".
    bad = taskdeck("--settings", "core.settings", "rebuild-rollups", "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 time: 'yesterday'" in bad.stderr, bad.stderr
    # Options of taskdeck's own commands are still checked.
    wrong = taskdeck("up", "--no-such-option")
    assert wrong.returncode == 2 and "unrecognized arguments: --no-such-option" in wrong.stderr
