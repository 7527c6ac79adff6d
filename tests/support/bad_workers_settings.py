"""The reference project's settings with worker groups written wrong, as a hand-edited settings file may be.

``taskdeck up`` and ``taskdeck worker`` must name each one (system check
``taskdeck.E006``) and start nothing (tests/cli/test_up.py).
"""

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

TASKDECK = {
    **TASKDECK,
    "WEB_WORKERS": "two",
    "WORKERS": {
        **TASKDECK["WORKERS"],
        "typo": {"queues": "default", "concurrency": "two"},
        "loose": "main",
    },
}
