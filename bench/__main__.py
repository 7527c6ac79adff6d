"""``python -m bench COMMAND [options]``: the benchmarks, one subcommand each.

    throughput   plain Celery vs the taskdeck stack: enqueue, drain, round trip (bench/throughput.py)
    priority     a high task behind a low backlog, per configuration; starvation (bench/priority.py)
    all          throughput, then priority (``--quick`` is passed to both)
    profile      where a worker's CPU goes per task, by process and by function (bench/profile.py)
    results      results in the Django database vs bare Celery (bench/results.py)
    monitor      the recorder's overhead, lag and memory (bench/monitor_overhead.py)
    webserver    runserver, gunicorn and uvicorn under keep-alive load (bench/webserver.py)
    payloads     apply_async() with payload capture, without it, and plain Celery (bench/payloads.py)
    capacity     runs/s one recorder absorbs from the record stream; two recorders on it (bench/capacity.py)
    batch        the recorder per run: a run's task-sent event and record together, apart (bench/one_batch.py)
    store        what storing a result costs a pool process, per result backend (bench/pool_store.py)
    soak         N tasks through `taskdeck up`'s whole stack, memory per process (bench/soak.py)

``python -m bench COMMAND --help`` lists each one's options. Every bench
starts its own workers on a broker of its own and prints its figures as
Markdown tables with the machine and its load; docs/benchmarks.md has them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _throughput(argv: list[str]) -> None:
    from bench.throughput import main

    main(argv)


def _priority(argv: list[str]) -> None:
    from bench.priority import main

    main(argv)


def _profile(argv: list[str]) -> None:
    from bench.profile import main

    main(argv)


def _soak(argv: list[str]) -> None:
    from bench.soak import main

    main(argv)


def _capacity(argv: list[str]) -> None:
    from bench.capacity import main

    main(argv)


def _batch(argv: list[str]) -> None:
    from bench.one_batch import main

    main(argv)


def _store(argv: list[str]) -> None:
    from bench.pool_store import main

    main(argv)


def _all(argv: list[str]) -> None:
    quick = ["--quick"] if "--quick" in argv else []
    _throughput(quick)
    _priority(quick)


def _with_argv(command: str, module: str) -> Callable[[list[str]], None]:
    """Run a bench whose ``main()`` reads ``sys.argv`` itself."""

    def run(argv: list[str]) -> None:
        from importlib import import_module

        sys.argv = [f"python -m bench {command}", *argv]
        import_module(module).main()

    return run


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "throughput": _throughput,
    "priority": _priority,
    "all": _all,
    "profile": _profile,
    "results": _with_argv("results", "bench.results"),
    "monitor": _with_argv("monitor", "bench.monitor_overhead"),
    "capacity": _capacity,
    "batch": _batch,
    "store": _store,
    "soak": _soak,
    "webserver": _with_argv("webserver", "bench.webserver"),
    "payloads": _with_argv("payloads", "bench.payloads"),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
