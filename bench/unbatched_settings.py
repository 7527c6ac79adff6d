"""core/settings.py with Celery's own event publishing put back: one publish per task event.

The control of taskdeck.events' batching, in bench/monitor_overhead.py and
tests/monitor/test_event_batches.py.
"""

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

TASKDECK = {**TASKDECK, "MONITOR": {**TASKDECK.get("MONITOR", {}), "EVENT_FLUSH_INTERVAL": 0}}
