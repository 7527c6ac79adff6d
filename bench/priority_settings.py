"""core/settings.py with one priority-bench case applied (``BENCH_PRIORITY_CASE``, see bench/priority.py)."""

import os

from bench.priority import apply_case
from core.settings import *  # noqa: F403

apply_case(os.environ["BENCH_PRIORITY_CASE"], globals())
