"""Beat without django-celery-beat: Celery's file scheduler, its file in the data folder.

django-celery-beat is an optional extra (it installs on Django < 6.1 only);
without it ``taskdeck up`` runs Celery's own scheduler, whose file would
otherwise land in whatever folder ``up`` was started from.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import current_app

from taskdeck.cli import CELERY_SCHEDULE_FILE, beat_argv
from tests.support.services import ARTIFACTS, ROOT, Proc, wait_for


def test_celery_file_scheduler_keeps_its_file_in_the_data_folder(tmp_path: Path, redis_db_url: str) -> None:
    """The data folder does not exist yet (``celery beat`` run by hand, not by ``taskdeck up``): the
    scheduler makes it, private. Celery's own PersistentScheduler stopped at once there
    (FileNotFoundError on the schedule file)."""
    data, cwd = tmp_path / "data", tmp_path / "project"
    cwd.mkdir()
    argv = beat_argv("core", current_app, data)
    env = {
        **os.environ,
        "CELERY_BROKER": redis_db_url,
        "TASKDECK_DATA_DIR": str(data),
        "PYTHONPATH": str(ROOT),
    }
    env["DJANGO_SETTINGS_MODULE"] = "core.settings"
    env["DJANGO_SECRET_KEY"] = "beat-test"  # else the settings make the data folder for their key
    # The scheduler taskdeck falls back to when django-celery-beat is not installed.
    scheduler = ["--scheduler", "taskdeck.beat:FileScheduler"]
    beat = Proc([*argv, *scheduler], env, ARTIFACTS / "beat-file.log", cwd=cwd)
    try:
        wait_for(
            lambda: list(data.glob(f"{CELERY_SCHEDULE_FILE}*")) or not beat.alive(), 60, "the schedule file"
        )
        assert beat.alive(), beat.output()
        assert list(cwd.iterdir()) == []
        assert data.stat().st_mode & 0o777 == 0o700
    finally:
        beat.stop()
