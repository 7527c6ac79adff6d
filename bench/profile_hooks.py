"""Loaded into a profiled worker (``celery worker -I bench.profile_hooks``, by bench/profile.py).

cProfile (on the thread's CPU clock) in the worker's main process (from ``worker_ready``, when the pool
is up, to shutdown) and in each pool process (from its start to its exit),
each written to ``$BENCH_PROFILE_DIR/<role>-<pid>.prof``.
"""

from __future__ import annotations

import cProfile
import os
import time
from typing import Any

from celery import signals

_profile: cProfile.Profile | None = None


def _start() -> None:
    global _profile
    # CPU time of the profiled thread: a process waiting (for the broker, the
    # database, a job) or preempted by the machine's other work costs nothing,
    # so the figures repeat under load.
    _profile = cProfile.Profile(time.thread_time)
    _profile.enable()


def _dump(role: str) -> None:
    if _profile is not None:
        _profile.disable()
        _profile.dump_stats(os.path.join(os.environ["BENCH_PROFILE_DIR"], f"{role}-{os.getpid()}.prof"))


@signals.worker_ready.connect
def _main_ready(**kwargs: Any) -> None:
    _start()


@signals.worker_shutdown.connect
def _main_shutdown(**kwargs: Any) -> None:
    _dump("main")


@signals.worker_process_init.connect
def _child_start(**kwargs: Any) -> None:
    _start()


@signals.worker_process_shutdown.connect
def _child_shutdown(**kwargs: Any) -> None:
    _dump("child")
