"""Priority under load: does a high task overtake a backlog of low ones on a shared worker?

Run (needs Redis and RabbitMQ on 127.0.0.1 and ``rabbitmqctl``; not part of ``make test``)::

    .venv/bin/python -m bench priority            # every case, Redis and RabbitMQ, 2 rounds
    .venv/bin/python -m bench priority --quick    # a smoke run: 1 round, fewer high tasks

Every case runs the project's own worker (``celery -A core worker``, prefork,
concurrency 4) with bench/priority_settings.py applying the case to
core/settings.py, on a broker of its own (a claimed Redis database; a fresh
RabbitMQ vhost per case). Results are ignored: the order in which tasks start
is decided before any result exists.

1. A backlog of 2,000 low tasks of 50 ms (``maintenance.tasks.rebuild_search_index``)
   is published; once the worker is busy, 20 high tasks (the same task, 50 ms)
   are sent at once (**burst**), then 20 more one every 100 ms (**spaced**).
   For each high task: how many low tasks *started* after it was sent and
   before it started (bench/starts.py records every start), and its wait.
2. Starvation: with taskdeck's defaults, a steady stream of high tasks at 80%
   (and 120%) of the worker's capacity on top of the backlog: how many low
   tasks still start per second. Capacity is measured first, as the rate at
   which low tasks start with nothing else queued (``--baseline`` seconds).

The cases (``CASES``): plain Celery's defaults on the notes' three queues;
taskdeck's defaults; one queue with in-queue priority (Redis priority steps,
RabbitMQ ``x-max-priority``) with Celery's prefetch, and with taskdeck's; and
dedicated workers per lane, the notes' way. docs/lanes.md discusses the figures.

The Django-tasks cases send the same task as a Django task (bench/dtasks.py):
the backlog at priority -100, the high tasks at 100, through ``TASKS``'
backend — taskdeck's ``CeleryBackend``, and, where they are installed (Python
3.12+, Django 6), django-tasks-celery's and django-tasks-fennel's — on the
taskdeck-configured shared worker, which also consumes the default queue.
A case whose backend is not installed is left out, and the run says so.
docs/django-tasks.md discusses the figures.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue

from bench import starts as starts_mod
from bench.workers import ROOT, child_env, running, wait_until, worker_argv

TASK = "maintenance.tasks.rebuild_search_index"
#: Seconds each low (and high) task sleeps.
DURATION = 0.05
CONCURRENCY = 4
#: The Django-tasks cases' sender (``python -c``): PRIORITY COUNT START SPACING; see bench/dtasks.py.
DJANGO_SENDER = "import sys, django; django.setup(); from bench.dtasks import send; send(sys.argv[1:])"
LANES = ("high", "medium", "low")


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    #: "celery": Celery's own defaults (prefetch 4, acks on receipt, queues
    #: polled round-robin, no events); "taskdeck": core/settings.py as shipped.
    worker: str
    #: "default": what core/settings.py does (:func:`taskdeck.lanes.lanes_for`:
    #: a queue per lane on Redis, one shared queue on RabbitMQ); "per-lane":
    #: the notes' three queues; "one": every lane in one queue.
    queues: str
    #: Messages carry the lane's priority and queues are declared for it
    #: (``x-max-priority`` on RabbitMQ; Redis needs no declaration).
    priority: bool
    #: One worker on the high lane and one on the others (2 + 2 processes) instead of one shared worker.
    dedicated: bool = False
    brokers: tuple[str, ...] = ("redis", "rabbitmq")
    #: ``TASKS["default"]["BACKEND"]`` of a Django-tasks case: tasks are sent with ``enqueue()``.
    django: str | None = None

    def lanes(self, broker_url: str) -> dict[str, str]:
        from taskdeck.lanes import NOTES_LANES, SHARED_QUEUE, lanes_for

        if self.queues == "default":
            return lanes_for(broker_url, NOTES_LANES)
        if self.queues == "one":
            return dict.fromkeys(NOTES_LANES, SHARED_QUEUE)
        return dict(NOTES_LANES)

    def workers(self, broker_url: str) -> list[tuple[list[str], int]]:
        """(queues, concurrency) of each worker."""
        lanes = self.lanes(broker_url)
        if self.dedicated:
            half = CONCURRENCY // 2
            return [([lanes["high"]], half), ([lanes["medium"], lanes["low"]], CONCURRENCY - half)]
        if self.django:
            # Backends other than taskdeck's send to the default queue.
            return [(list(dict.fromkeys(["default", *lanes.values()])), CONCURRENCY)]
        return [(list(dict.fromkeys(lanes.values())), CONCURRENCY)]

    def available(self) -> bool:
        """Whether this process can run the case (a Django-tasks backend must be importable)."""
        if not self.django:
            return True
        from importlib.util import find_spec

        return find_spec(self.django.split(".")[0]) is not None


CASES = {
    case.key: case
    for case in (
        Case(
            "plain", "plain Celery defaults, the notes' three queues, one worker", "celery", "per-lane", False
        ),
        Case("taskdeck", "taskdeck defaults", "taskdeck", "default", True),
        Case(
            "taskdeck-per-lane",
            "taskdeck settings, a queue per lane (RabbitMQ: not the default)",
            "taskdeck",
            "per-lane",
            True,
            brokers=("rabbitmq",),
        ),
        Case(
            "taskdeck-one-queue",
            "taskdeck settings, every lane in one queue (Redis: not the default)",
            "taskdeck",
            "one",
            True,
            brokers=("redis",),
        ),
        Case(
            "one-queue-celery",
            "one queue with in-queue priority, Celery's prefetch and acks",
            "celery",
            "one",
            True,
        ),
        Case(
            "dedicated",
            "dedicated lane workers (2 processes high, 2 medium+low), Celery defaults",
            "celery",
            "per-lane",
            False,
            dedicated=True,
        ),
        Case(
            "django-tasks",
            "Django tasks, taskdeck.tasks.CeleryBackend",
            "taskdeck",
            "default",
            True,
            django="taskdeck.tasks.CeleryBackend",
        ),
        Case(
            "django-tasks-celery",
            "Django tasks, django-tasks-celery 0.1.1",
            "taskdeck",
            "default",
            True,
            django="django_tasks_celery.CeleryBackend",
        ),
        Case(
            "django-tasks-fennel",
            "Django tasks, django-tasks-fennel 0.1",
            "taskdeck",
            "default",
            True,
            django="django_tasks_fennel.backend.CeleryBackend",
        ),
    )
}


def queues(case: Case, broker_url: str, default_queue: str) -> list[Queue]:
    """``CELERY_TASK_QUEUES`` of a case: worker and publisher must declare them alike."""
    from taskdeck.lanes import declare_queues

    names = [default_queue, *dict.fromkeys(case.lanes(broker_url).values())]
    if case.priority:
        return declare_queues(broker_url, names)
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names]


def apply_case(key: str, s: dict[str, Any]) -> None:
    """Change the settings namespace of core/settings.py into case ``key`` (bench/priority_settings.py)."""
    case = CASES[key]
    s["CELERY_TASK_IGNORE_RESULT"] = True  # no database in the way: the bench counts starts
    if case.worker == "celery":
        s["CELERY_TASK_ACKS_LATE"] = False
        s["CELERY_TASK_REJECT_ON_WORKER_LOST"] = False
        s["CELERY_WORKER_PREFETCH_MULTIPLIER"] = 4
        s["CELERY_BROKER_TRANSPORT_OPTIONS"] = {}
        s["CELERY_WORKER_SEND_TASK_EVENTS"] = s["CELERY_TASK_SEND_SENT_EVENT"] = False
    s["TASKDECK"] = {**s["TASKDECK"], "LANES": case.lanes(s["CELERY_BROKER_URL"])}
    if case.django:
        # No result backend for any of them: the bench counts starts, not results.
        s["CELERY_RESULT_BACKEND"] = None
        s["TASKS"] = {"default": {"BACKEND": case.django, "QUEUES": []}}
    s["CELERY_TASK_QUEUES"] = queues(case, s["CELERY_BROKER_URL"], s["CELERY_TASK_DEFAULT_QUEUE"])


def lane_options(case: Case, broker_url: str, lane: str) -> dict[str, Any]:
    """What taskdeck's ``lane_options`` gives for the case's lanes (plain cases: the queue alone)."""
    from taskdeck.brokers import for_url

    options: dict[str, Any] = {"queue": case.lanes(broker_url)[lane]}
    if case.priority:
        options["priority"] = for_url(broker_url).lane_priority(LANES.index(lane))
    return options


class Starts:
    """The start records of bench/starts.py, read incrementally."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.records: list[tuple[str, float]] = []
        self.by_id: dict[str, float] = {}

    def refresh(self) -> None:
        for raw in self.client.lrange(starts_mod.KEY, len(self.records), -1):
            task_id, at = raw.decode().split()
            self.records.append((task_id, float(at)))
            self.by_id[task_id] = float(at)

    def all_started(self, ids: list[str]) -> bool:
        self.refresh()
        return all(i in self.by_id for i in ids)


@dataclass
class High:
    phase: str  # "burst" or "spaced"
    overtaken: int  # low tasks started after it was sent and before it started
    wait: float  # seconds from sent to started


@dataclass
class CaseRun:
    case: str
    broker: str
    round: int
    highs: list[High] = field(default_factory=list)


@dataclass
class StarvationRun:
    broker: str
    round: int
    load: float
    highs_sent_per_s: float
    highs_started_per_s: float
    lows_before_per_s: float
    lows_during_per_s: float
    high_wait_p50: float
    high_wait_p99: float


def publisher(case: Case, url: str) -> Celery:
    app = Celery(f"bench-priority-{case.key}", broker=url, set_as_current=False)
    app.conf.task_queues = queues(case, url, "default")
    app.conf.broker_connection_retry_on_startup = True
    return app


@contextmanager
def case_workers(case: Case, url: str, starts_url: str, logs: Path, tmp: Path) -> Iterator[list[Any]]:
    env = case_env(case, url, starts_url, tmp)
    with ExitStack() as stack:
        procs = []
        for index, (queue_names, concurrency) in enumerate(case.workers(url)):
            modules = "bench.starts,bench.dtasks" if case.django else "bench.starts"
            argv = worker_argv("core", queue_names, concurrency, f"prio-{case.key}-{index}", "-I", modules)
            procs.append(stack.enter_context(running(argv, env, logs / f"priority-{case.key}.log")))
        yield procs


def case_env(case: Case, url: str, starts_url: str, tmp: Path) -> dict[str, str]:
    """Environment of the case's workers and of its Django senders."""
    return child_env(
        DJANGO_SETTINGS_MODULE="bench.priority_settings",
        BENCH_PRIORITY_CASE=case.key,
        CELERY_BROKER=url,
        TASKDECK_DATA_DIR=str(tmp),
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",  # never touched: results are ignored
        **{starts_mod.ENV: starts_url},
    )


def enqueue_django(
    case: Case,
    url: str,
    starts_url: str,
    tmp: Path,
    priority: int,
    count: int,
    start: int,
    spacing: float = 0,
) -> list[tuple[str, float]]:
    """Send ``count`` Django tasks at ``priority`` with ``enqueue()`` (bench/dtasks.py): (id, sent at)."""
    argv = [sys.executable, "-c", DJANGO_SENDER, str(priority), str(count), str(start), str(spacing)]
    env = case_env(case, url, starts_url, tmp)
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"bench.dtasks failed for case {case.key}:\n{done.stderr[-2000:]}")
    return [(line.split()[0], float(line.split()[1])) for line in done.stdout.split("\n") if line.strip()]


def publish_backlog(app: Celery, case: Case, url: str, n: int) -> None:
    options = lane_options(case, url, "low")
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(TASK, (i,), {"seconds": DURATION}, producer=producer, **options)


def send_high(app: Celery, options: dict[str, Any], i: int) -> tuple[str, float]:
    result = app.send_task(TASK, (100_000 + i,), {"seconds": DURATION}, **options)
    return result.id, time.time()


@contextmanager
def busy_on_backlog(
    case: Case, url: str, starts_url: str, args: argparse.Namespace
) -> Iterator[tuple[Celery, dict[str, Any], Starts, list[Any], Path]]:
    """The case's workers started on a backlog of ``args.backlog`` low tasks, every process busy.

    Yields the publishing app, the high lane's send options, the start records,
    the worker processes and their log; the app is closed after the block.
    """
    app = publisher(case, url)
    high = lane_options(case, url, "high")
    starts = Starts(starts_url)
    log = args.logs / f"priority-{case.key}.log"
    with case_workers(case, url, starts_url, args.logs, args.tmp) as procs:
        if case.django:
            enqueue_django(case, url, starts_url, args.tmp, -100, args.backlog, 0)
        else:
            publish_backlog(app, case, url, args.backlog)
        wait_until(
            lambda: starts.client.llen(starts_mod.KEY) >= 3 * CONCURRENCY,
            120,
            "the worker to start",
            procs,
            log,
        )
        time.sleep(0.3)  # steady state: every process busy
        yield app, high, starts, procs, log
    app.close()


def overtaken(low_times: list[float], sent: float, started: float) -> int:
    return bisect.bisect_left(low_times, started) - bisect.bisect_right(low_times, sent)


def run_case(
    case: Case, broker: str, url: str, starts_url: str, args: argparse.Namespace, round_: int
) -> CaseRun:
    sent: dict[str, tuple[str, float]] = {}  # id -> (phase, sent at)
    with busy_on_backlog(case, url, starts_url, args) as (app, high, starts, procs, log):

        def highs(start: int, spacing: float) -> list[tuple[str, float]]:
            if case.django:
                return enqueue_django(case, url, starts_url, args.tmp, 100, args.highs, start, spacing)
            out = []
            for i in range(args.highs):
                out.append(send_high(app, high, start + i))
                time.sleep(spacing)
            return out

        burst = highs(0, 0)
        sent.update((task_id, ("burst", at)) for task_id, at in burst)
        wait_until(lambda: starts.all_started([i for i, _ in burst]), 120, "the burst to start", procs, log)
        time.sleep(0.2)
        spaced = highs(args.highs, 0.1)
        sent.update((task_id, ("spaced", at)) for task_id, at in spaced)
        wait_until(
            lambda: starts.all_started([i for i, _ in spaced]), 120, "the spaced highs to start", procs, log
        )
    starts.refresh()
    low_times = sorted(at for task_id, at in starts.records if task_id not in sent)
    run = CaseRun(case.key, broker, round_)
    for task_id, (phase, at) in sent.items():
        started = starts.by_id[task_id]
        run.highs.append(High(phase, overtaken(low_times, at, started), started - at))
    return run


def run_starvation(
    broker: str, url: str, starts_url: str, args: argparse.Namespace, round_: int, load: float
) -> StarvationRun:
    sent: dict[str, float] = {}
    # The backlog is large enough that low tasks never run out, whatever share they get.
    with busy_on_backlog(CASES["taskdeck"], url, starts_url, args) as (app, high, starts, _, _):
        # Capacity as measured, not nominal (4 / 50 ms): each task also costs
        # its ack, the next fetch and its events, on a machine others share.
        before = time.time()
        time.sleep(args.baseline)
        starts.refresh()
        stream_start = time.time()
        capacity = sum(before <= at < stream_start for _, at in starts.records) / (stream_start - before)
        rate = load * capacity
        i = 0
        while time.time() < stream_start + args.stream:
            task_id, at = send_high(app, high, i)
            sent[task_id] = at
            i += 1
            time.sleep(max(0.0, stream_start + i / rate - time.time()))
        stream_end = time.time()
        starts.refresh()
    starts.refresh()
    lows = [at for task_id, at in starts.records if task_id not in sent]
    settle = stream_start + 0.5  # the first half second is the queue filling up
    lows_during = sum(settle <= at < stream_end for at in lows) / (stream_end - settle)
    started = [starts.by_id[t] for t in sent if t in starts.by_id]
    waits = sorted(starts.by_id[t] - at for t, at in sent.items() if t in starts.by_id)
    return StarvationRun(
        broker,
        round_,
        load,
        highs_sent_per_s=len(sent) / (stream_end - stream_start),
        highs_started_per_s=sum(settle <= at < stream_end for at in started) / (stream_end - settle),
        lows_before_per_s=capacity,
        lows_during_per_s=lows_during,
        high_wait_p50=percentile(waits, 0.5) if waits else float("nan"),
        high_wait_p99=percentile(waits, 0.99) if waits else float("nan"),
    )


def percentile(samples: list[float], q: float) -> float:
    from bench.results import percentile as pct

    return pct(samples, q)


@contextmanager
def broker_for_case(broker: str, redis_url: str) -> Iterator[str]:
    """The case's broker URL: the claimed Redis database emptied, or a fresh vhost."""
    from bench.brokers import empty_redis, rabbitmq_vhost

    empty_redis(redis_url)
    if broker == "redis":
        yield redis_url
    else:
        with rabbitmq_vhost() as url:
            yield url


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.brokers import redis_db

    brokers = [b for b in args.brokers.split(",") if b]
    cases = [CASES[c] for c in args.cases.split(",") if c] if args.cases else list(CASES.values())
    loads = [float(x) for x in args.loads.split(",") if x]
    runs: list[CaseRun] = []
    starvation: list[StarvationRun] = []
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    with redis_db() as redis_url:
        for round_ in range(1, args.rounds + 1):
            for broker in brokers:
                for case in cases:
                    if broker not in case.brokers:
                        continue
                    if not case.available():
                        print(f"{case.key}: not measured, {case.django} is not installed", file=sys.stderr)
                        continue
                    with broker_for_case(broker, redis_url) as url:
                        result = run_case(case, broker, url, redis_url, args, round_)
                    runs.append(result)
                    print(
                        f"round {round_}: {broker} {case.key}: {summary(result)}", file=sys.stderr, flush=True
                    )
                for load in loads:
                    with broker_for_case(broker, redis_url) as url:
                        s = run_starvation(broker, url, redis_url, args, round_, load)
                    starvation.append(s)
                    print(
                        f"round {round_}: {broker} starvation {load:.0%}: lows "
                        f"{s.lows_before_per_s:.0f}/s -> {s.lows_during_per_s:.0f}/s, "
                        f"high wait p50 {s.high_wait_p50 * 1000:.0f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "runs": [asdict(r) for r in runs],
        "starvation": [asdict(s) for s in starvation],
        "settings": {
            "backlog": args.backlog,
            "highs": args.highs,
            "duration": DURATION,
            "concurrency": CONCURRENCY,
            "rounds": args.rounds,
            "stream": args.stream,
        },
        "load": {"before": " ".join(load_before), "after": " ".join(load_after)},
        "elapsed": time.monotonic() - started,
    }


def summary(run: CaseRun) -> str:
    parts = []
    for phase in ("burst", "spaced"):
        highs = [h for h in run.highs if h.phase == phase]
        counts = sorted(h.overtaken for h in highs)
        waits = sorted(h.wait for h in highs)
        parts.append(
            f"{phase} lows ahead p50 {statistics.median(counts):.0f} max {counts[-1]}, "
            f"wait p50 {statistics.median(waits) * 1000:.0f} ms max {waits[-1] * 1000:.0f} ms"
        )
    return "; ".join(parts)


def report(data: dict[str, Any]) -> list[str]:
    """Markdown tables of a run (printed, and pasted into docs/benchmarks.md)."""
    settings = data["settings"]
    lines = [
        f"Backlog {settings['backlog']} low tasks of {settings['duration'] * 1000:.0f} ms, worker "
        f"concurrency {settings['concurrency']}, {settings['highs']} high tasks per phase, "
        f"{settings['rounds']} round(s); figures per round, separated by `/`.",
        "",
    ]
    for broker in dict.fromkeys(r["broker"] for r in data["runs"]):
        lines += [
            f"**{broker}**",
            "",
            "| case | burst: lows started ahead, p50 | max | burst wait p50 | max "
            "| spaced: lows ahead, p50 | max | spaced wait p50 | max |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, case in CASES.items():
            rounds = [r for r in data["runs"] if r["broker"] == broker and r["case"] == key]
            if not rounds:
                continue
            cells = []
            for phase in ("burst", "spaced"):
                counts = [sorted(h["overtaken"] for h in r["highs"] if h["phase"] == phase) for r in rounds]
                waits = [sorted(h["wait"] for h in r["highs"] if h["phase"] == phase) for r in rounds]
                cells += [
                    " / ".join(f"{statistics.median(c):.0f}" for c in counts),
                    " / ".join(f"{c[-1]}" for c in counts),
                    " / ".join(f"{statistics.median(w) * 1000:.0f} ms" for w in waits),
                    " / ".join(f"{w[-1] * 1000:.0f} ms" for w in waits),
                ]
            lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
        lines.append("")
    if data["starvation"]:
        lines += [
            f"Starvation, taskdeck defaults: high tasks streamed for {settings['stream']:.0f} s "
            f"on top of the backlog, at a share of the capacity measured just before "
            f"(low tasks started per second; nominal {settings['concurrency']} / "
            f"{settings['duration'] * 1000:.0f} ms = "
            f"{settings['concurrency'] / settings['duration']:.0f}/s).",
            "",
            "| broker | high load | highs sent/s | highs started/s | capacity (lows/s before) | "
            "lows started/s during | high wait p50 | high wait p99 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in data["starvation"]:
            lines.append(
                f"| {s['broker']} (round {s['round']}) | {s['load']:.0%} | {s['highs_sent_per_s']:.0f} | "
                f"{s['highs_started_per_s']:.0f} | {s['lows_before_per_s']:.0f} | "
                f"{s['lows_during_per_s']:.0f} | "
                f"{s['high_wait_p50'] * 1000:.0f} ms | {s['high_wait_p99'] * 1000:.0f} ms |"
            )
        lines.append("")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, 5 highs, 80%% load only")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each case once per round (default 2)")
    parser.add_argument(
        "--brokers", default="redis,rabbitmq", help="comma-separated (default redis,rabbitmq)"
    )
    parser.add_argument("--cases", default="", help=f"comma-separated, default all: {', '.join(CASES)}")
    parser.add_argument("--backlog", type=int, default=2000, help="low tasks queued first (default 2000)")
    parser.add_argument("--highs", type=int, default=20, help="high tasks per phase (default 20)")
    parser.add_argument(
        "--loads", default="0.8,1.2", help="starvation loads, share of capacity (default 0.8,1.2)"
    )
    parser.add_argument("--stream", type=float, default=5.0, help="seconds of high-task stream (default 5)")
    parser.add_argument(
        "--baseline",
        type=float,
        default=2.0,
        help="seconds of low tasks alone, to measure capacity (default 2)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".taskdeck" / "bench" / "priority.json")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "priority.png")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench priority",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.highs, args.loads, args.stream = 1, 5, "0.8", 2.0
    from bench.chart import priority_chart
    from bench.report import run_and_finish

    return run_and_finish(args, "priority", run, report, priority_chart)


if __name__ == "__main__":
    main()
