"""core/settings.py with one bench variant applied (``BENCH_VARIANT``, see bench/variants.py)."""

import os

from bench.variants import VARIANTS
from core.settings import *  # noqa: F403

VARIANTS[os.environ["BENCH_VARIANT"]].apply(globals())
