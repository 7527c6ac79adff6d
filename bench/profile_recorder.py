"""The recorder under cProfile, for bench/profile.py: ``python -m bench.profile_recorder -A core``.

``taskdeck monitor`` with cProfile on the CPU clock of its main thread (the
loop that reads the records and writes the batches; the event capture thread
is not profiled), from the recorder's start to its stop (SIGTERM), written to
``$BENCH_PROFILE_DIR/recorder-<pid>.prof``.
"""

from __future__ import annotations

import cProfile
import os
import sys
import time


def main() -> int:
    import django

    django.setup()
    from taskdeck.monitor.cli import monitor_main

    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        return monitor_main(sys.argv[1:])
    finally:
        profile.disable()
        profile.dump_stats(os.path.join(os.environ["BENCH_PROFILE_DIR"], f"recorder-{os.getpid()}.prof"))


if __name__ == "__main__":
    sys.exit(main())
