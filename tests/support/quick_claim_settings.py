"""The reference project's settings with a dead recorder's records claimed after 6 s (not 60)."""

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

TASKDECK = {**TASKDECK, "MONITOR": {**TASKDECK.get("MONITOR", {}), "RECORD_CLAIM_AFTER": 6}}
