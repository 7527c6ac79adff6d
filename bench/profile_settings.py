"""core/settings.py with a variant of bench/profile.py applied (``BENCH_SETTINGS``: JSON, dotted names).

``{"CELERY_WORKER_PREFETCH_MULTIPLIER": 4, "TASKDECK.MONITOR.EVENT_FLUSH_INTERVAL": 0.5}``
sets the first name, and the key inside the nested dicts of the second.
"""

import copy
import json
import os

from core.settings import *  # noqa: F403

for _dotted, _value in json.loads(os.environ.get("BENCH_SETTINGS") or "{}").items():
    _name, *_path = _dotted.split(".")
    if not _path:
        globals()[_name] = _value
        continue
    _target = globals()[_name] = copy.deepcopy(globals()[_name])
    for _key in _path[:-1]:
        _target = _target.setdefault(_key, {})
    _target[_path[-1]] = _value
