"""Celery's file scheduler, which makes the folder of its schedule file first.

The preset keeps the schedule file in ``TASKDECK["DATA_DIR"]``
(``.taskdeck/celerybeat-schedule``), not in the folder beat is started from.
``taskdeck up`` makes that folder; ``celery -A proj beat``, as run in
production, did not, and beat stopped at once (``FileNotFoundError`` on the
schedule file). :class:`FileScheduler` makes it (private, 0700) before Celery
opens the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

from taskdeck.datadir import private_folder


class FileScheduler(PersistentScheduler):
    """``celery.beat.PersistentScheduler`` whose schedule file's folder is made if missing."""

    def setup_schedule(self) -> Any:
        folder = Path(self.schedule_filename).parent
        if not folder.exists():
            private_folder(folder)
        return super().setup_schedule()
