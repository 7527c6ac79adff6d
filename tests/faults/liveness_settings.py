"""The fault tests' settings, with LOST and STUCK looked for every second and small thresholds.

A worker is offline after 3 missed heartbeats (2 s each); a run waiting
``STUCK_AFTER`` seconds, or ``STUCK_NO_CONSUMER_AFTER`` seconds on a queue no
worker consumes, is STUCK.
"""

from tests.faults.worker_settings import *  # noqa: F403
from tests.faults.worker_settings import TASKDECK

STUCK_AFTER = 8
TASKDECK = {
    **TASKDECK,
    "MONITOR": {
        **TASKDECK.get("MONITOR", {}),
        "LIVENESS_INTERVAL": 1,
        "STUCK_AFTER": STUCK_AFTER,
        "STUCK_NO_CONSUMER_AFTER": 1,
        "SAMPLE_INTERVAL": 1,
    },
}
