"""Settings of the fault tests' workers and recorders: the project's, with redelivery fast enough to watch.

Production keeps ``visibility_timeout = 3600`` (core/settings.py): Redis gives
an unacknowledged message to another worker only after that many seconds, so
it must exceed the longest task. The tests' tasks take milliseconds, so a few
seconds let a test see redelivery happen; ``unacked_restore_interval`` and
``unacked_restore_throttle`` make every worker look for such messages each
second instead of every ~100 s (kombu's defaults: 10 s x every 10th sweep).
A worker killed during a sweep leaves the sweep's lock (``unacked_mutex``) in
Redis until it expires: 300 s by default, in which no worker restores anything
(longer than a test's timeout); a sweep takes milliseconds, so the tests'
lock expires after 10 s.

``TASKDECK_FAULTS_ACKS_LATE=0`` turns late acknowledgement off, for the control
runs that show what the default settings protect against.
"""

import os

from core.settings import *  # noqa: F403
from core.settings import CELERY_BROKER_TRANSPORT_OPTIONS

VISIBILITY_TIMEOUT = int(os.environ.get("TASKDECK_FAULTS_VISIBILITY_TIMEOUT", "6"))

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 10,
}
CELERY_TASK_ACKS_LATE = os.environ.get("TASKDECK_FAULTS_ACKS_LATE", "1") == "1"
CELERY_TASK_REJECT_ON_WORKER_LOST = CELERY_TASK_ACKS_LATE
