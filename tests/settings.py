"""Settings of the test run: the reference project's, on PostgreSQL by default.

``DATABASE_URL`` may point elsewhere; ``TASKDECK_TEST_DB`` names the test
database, so two runs on one server don't share one.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/taskdeck")

from core.settings import *  # noqa: E402,F403
from core.settings import DATABASES  # noqa: E402

if "TASKDECK_TEST_DB" in os.environ:
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TASKDECK_TEST_DB"]}
