"""The reference project's settings with a worker-side message size limit small enough to fuzz cheaply."""

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

#: Bytes; tests/guard/test_message_fuzz.py sends bodies just over it.
WORKER_LIMIT = 4096

TASKDECK = {**TASKDECK, "WORKER_MAX_MESSAGE_BYTES": WORKER_LIMIT}
