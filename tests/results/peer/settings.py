"""Settings of the peer suite's run: its own project settings, on our database and Redis.

``TASKDECK_PEER_DATABASE_URL`` is the database (PostgreSQL or SQLite);
``TASKDECK_PEER_REDIS_URL`` and ``TASKDECK_PEER_KEY_PREFIX`` are where the
write-behind backend keeps results. The suite's ``read-only`` and
``secondary`` aliases mirror ``default`` in tests, as in its own settings.
"""

import os

import dj_database_url
from t.proj.settings import *  # noqa: F403

_default = dj_database_url.parse(os.environ["TASKDECK_PEER_DATABASE_URL"])
if _default["ENGINE"].endswith("postgresql"):
    _default["TEST"] = {"NAME": os.environ.get("TASKDECK_PEER_TEST_DB", "test_taskdeck_peer")}
    _read_only = {
        **_default,
        "OPTIONS": {"options": "-c default_transaction_read_only=on"},
        "TEST": {"MIRROR": "default"},
    }
else:
    # A file, not Django's shared in-memory test database: the suite writes
    # through its mirror aliases, which shared-cache SQLite refuses ("table
    # is locked") where a file only waits for the other connection.
    _default["TEST"] = {"NAME": f"{_default['NAME']}.test"}
    _default["OPTIONS"] = {"timeout": 1}  # the one test that writes from two connections waits 1 s, not 5
    _read_only = {**_default, "TEST": {"MIRROR": "default"}}
DATABASES = {
    "default": _default,
    "secondary": {**_default, "TEST": {"MIRROR": "default"}},
    "read-only": _read_only,
}

TASKDECK = {
    "RESULTS": {
        "REDIS_URL": os.environ.get("TASKDECK_PEER_REDIS_URL", "redis://127.0.0.1:6379/15"),
        "KEY_PREFIX": os.environ.get("TASKDECK_PEER_KEY_PREFIX", "taskdeck:peer:"),
        "STARTED_DELAY": float(os.environ.get("TASKDECK_PEER_STARTED_DELAY", "0.05")),
    }
}
