"""core/settings.py with a recorder that writes the events waiting when one arrives (``EVENT_LINGER = 0``).

The control of the recorder's event linger in tests/monitor/test_event_batches.py.
"""

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

TASKDECK = {**TASKDECK, "MONITOR": {**TASKDECK.get("MONITOR", {}), "EVENT_LINGER": 0}}
