"""The reference project's settings with the recorder's staleness (and the workers' watch of it) at 1 s."""

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

TASKDECK = {**TASKDECK, "MONITOR": {**TASKDECK.get("MONITOR", {}), "RECORDER_STALE_AFTER": 1}}
