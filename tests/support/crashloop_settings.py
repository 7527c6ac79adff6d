"""The reference project's settings plus a worker group that cannot start: its import fails.

Only the process started for the ``broken`` group (``-Q broken``) imports a
module that does not exist, as a worker with a typo in an import would; the
web server, the recorder and the other workers start as usual
(tests/cli/test_up.py).
"""

import sys

from core.settings import *  # noqa: F403
from core.settings import TASKDECK

TASKDECK = {
    **TASKDECK,
    "WORKERS": {**TASKDECK["WORKERS"], "broken": {"queues": ["broken"], "concurrency": 1}},
}

if "broken" in sys.argv:
    import taskdeck_module_that_does_not_exist  # noqa: F401
