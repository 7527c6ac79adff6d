"""Run the processes of a project together, the way ``taskdeck up`` does.

Each process runs in a session of its own (so Ctrl-C in the terminal reaches
only the supervisor, which stops the others in order) and gets SIGKILL if the
supervisor itself dies (``PR_SET_PDEATHSIG``): no process outlives ``up``.
Their output is interleaved line by line, each line prefixed with the
process's name.

A process marked ``restart`` (workers, beat, the recorder, the web server)
that exits on its own is started again after a back-off of 1, 2, 4 … up to
30 seconds (counting its exits of the last ``RESTART_WINDOW`` seconds), what
is left of its process group killed first. It is never given up on: one
process that crash-loops (a broken import, a bad setting) does not take the
web server and the others down with it. Each exit is one line naming the
process, its exit code and why (the last error line it printed); a run that
fails like the one before it has its output held back, so a crash loop is
one line per attempt, not a traceback per attempt. Its state (running,
restarting, crash-looping) goes to the status file of
:mod:`taskdeck.supervision`, which ``taskdeck status``, the dashboard and
``/metrics`` read. A process not marked ``restart`` (the embedded broker)
that exits stops everything, naming it.

Stopping: SIGTERM to each process group, in the reverse order of start (web
and beat first, workers next, which finish their current tasks, the broker
last), then SIGKILL to whatever is left after ``grace`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from taskdeck import supervision

PR_SET_PDEATHSIG = 1
COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93", "95", "92"]
#: Exits within this many seconds count towards the back-off (and crash-looping).
RESTART_WINDOW = supervision.CRASH_LOOP_WINDOW
MAX_BACKOFF = 30.0
#: A restarted run's output is held back until it has run this long (or ends differently).
HOLD_FOR = 10.0
#: Lines of each process's output kept; the reason for an exit is looked for in the last REASON_LINES.
TAIL_LINES = 200
REASON_LINES = 30
#: A line that names an error: "ModuleNotFoundError: ...", "Error: Unable to load ...".
ERROR_LINE = re.compile(r"\b((?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit)\b:?.*)$")


@dataclass
class Spec:
    """A process to run: its name (the log prefix), command line and readiness check."""

    name: str
    argv: list[str]
    ready: Callable[[], bool] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Start it again when it exits on its own (with a back-off), instead of stopping everything.
    restart: bool = False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class ProcessExited(RuntimeError):
    def __init__(self, name: str, code: int | None, reason: str = "") -> None:
        super().__init__(f"{name} exited with code {code}" + (f": {reason}" if reason else ""))
        self.name = name
        self.code = code
        self.reason = reason


@dataclass
class Supervised:
    """What the supervisor knows of one process, beyond its Popen."""

    state: str = "running"
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    exits: deque[float] = field(default_factory=deque)
    last_code: int | None = None
    last_reason: str = ""
    next_start: float | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    #: Output of a restarted run, held back while it may fail like the one before.
    held: list[str] | None = None

    def public(self) -> dict[str, Any]:
        """The state as the status file has it (wall-clock times)."""
        offset = time.time() - time.monotonic()
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "recent_exits": len(self.exits),
            "last_exit_code": self.last_code,
            "last_reason": self.last_reason,
            "next_start": None if self.next_start is None else self.next_start + offset,
        }


def exit_reason(code: int | None, lines: Sequence[str]) -> str:
    """Why a process exited: the signal that killed it, else the last error line of its output's end."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    last = [line.strip() for line in lines[-REASON_LINES:] if line.strip()]
    for line in reversed(last):
        found = ERROR_LINE.search(line)
        if found:
            return found.group(1).strip()[:300]
    return last[-1][:300] if last else ""


class Fleet:
    """Start, watch and stop a set of processes with interleaved, prefixed output."""

    def __init__(
        self,
        out: IO[str] | None = None,
        grace: float = 30.0,
        colour: bool | None = None,
        status_dir: Path | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.grace = grace
        self.colour = self.out.isatty() if colour is None else colour
        self.procs: list[tuple[Spec, subprocess.Popen[bytes]]] = []
        self._lock = threading.Lock()
        self._width = 8
        self._stopping = False
        self._envs: dict[str, dict[str, str]] = {}
        #: Where the status file goes (supervision.write); None: no file.
        self.status_dir = status_dir
        self.supervised: dict[str, Supervised] = {}
        self._pumps: dict[int, threading.Thread] = {}

    def reserve(self, names: Sequence[str]) -> None:
        """Align every prefix to the longest of ``names`` from the first line on."""
        self._width = max([self._width, *map(len, names)])

    def say(self, name: str, line: str) -> None:
        """Write one line with ``name``'s prefix."""
        prefix = f"{name:<{self._width}} |"
        if self.colour:
            index = sum(map(ord, name)) % len(COLOURS)
            prefix = f"\033[{COLOURS[index]}m{prefix}\033[0m"
        with self._lock:
            self.out.write(f"{prefix} {line.rstrip()}\n")
            self.out.flush()

    def start(self, spec: Spec, env: dict[str, str], ready_timeout: float = 60) -> subprocess.Popen[bytes]:
        """Start ``spec`` and wait for its readiness check, if it has one."""
        self._width = max(self._width, len(spec.name))
        self._envs[spec.name] = env
        self.supervised[spec.name] = Supervised()
        popen = self._spawn(spec)
        self.procs.append((spec, popen))
        self._publish()
        if spec.ready is not None:
            deadline = time.monotonic() + ready_timeout
            while not spec.ready():
                if popen.poll() is not None:
                    time.sleep(0.2)  # the rest of its output, for the reason
                    raise ProcessExited(spec.name, popen.returncode, self.reason(spec.name, popen.returncode))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{spec.name} was not ready after {ready_timeout:.0f}s")
                time.sleep(0.1)
        return popen

    def _spawn(self, spec: Spec) -> subprocess.Popen[bytes]:
        record = self.supervised[spec.name]
        record.tail.clear()
        record.started = time.monotonic()
        popen = subprocess.Popen(
            spec.argv,
            env={**self._envs[spec.name], **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        record.pid = popen.pid
        thread = threading.Thread(target=self._pump, args=(spec.name, popen), daemon=True)
        thread.start()
        self._pumps[popen.pid] = thread
        return popen

    def _pump(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        record = self.supervised[name]
        for raw in iter(popen.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            with self._lock:
                record.tail.append(line)
                held = record.held
                if held is not None:
                    held.append(line)
            if held is None:
                self.say(name, line)

    def reason(self, name: str, code: int | None) -> str:
        """Why ``name`` exited with ``code``, from the end of its output."""
        with self._lock:
            return exit_reason(code, list(self.supervised[name].tail))

    def _release(self, name: str) -> None:
        """Print what a restarted run's output held back, and stop holding it."""
        with self._lock:
            record = self.supervised[name]
            held, record.held = record.held or [], None
        for line in held:
            self.say(name, line)

    def wait(self) -> None:
        """Block until ``stop()`` is called (or a signal), restarting what may be restarted.

        Raises ProcessExited when a process not marked ``restart`` exits.
        """
        while not self._stopping:
            self.poll()
            time.sleep(0.2)

    def poll(self) -> None:
        """One round of supervision: note exits, restart what is due. Never blocks on a back-off."""
        now = time.monotonic()
        for index, (spec, popen) in enumerate(self.procs):
            if self._stopping:
                return
            record = self.supervised[spec.name]
            if record.next_start is not None:
                if now >= record.next_start:
                    record.next_start = None
                    record.restarts += 1
                    record.held = []  # shown once it runs HOLD_FOR seconds or fails differently
                    self.procs[index] = (spec, self._spawn(spec))
                    record.state = (
                        "crash-looping" if len(record.exits) >= supervision.CRASH_LOOP_EXITS else "running"
                    )
                    self._publish()
                continue
            if popen.poll() is None:
                if record.held is not None and now - record.started >= HOLD_FOR:
                    self._release(spec.name)
                if record.state == "crash-looping" and not self._recent(record, now):
                    record.state = "running"
                    self.say("taskdeck", f"{spec.name} has kept running: no longer crash-looping")
                    self._publish()
                continue
            self._exited(spec, popen, record, now)

    def _recent(self, record: Supervised, now: float) -> int:
        while record.exits and now - record.exits[0] > RESTART_WINDOW:
            record.exits.popleft()
        return len(record.exits)

    def _exited(self, spec: Spec, popen: subprocess.Popen[bytes], record: Supervised, now: float) -> None:
        _signal_group(popen, signal.SIGKILL)  # its pool children, if any are left
        popen.wait()
        thread = self._pumps.pop(popen.pid, None)
        if thread is not None:
            thread.join(2)  # the last lines of its output (the group is gone: no one holds the pipe)
        reason = self.reason(spec.name, popen.returncode)
        same = reason == record.last_reason and record.last_code == popen.returncode
        if record.held is not None and not same:
            self._release(spec.name)
        record.held = None
        record.last_code, record.last_reason = popen.returncode, reason
        because = f": {reason}" if reason else ""
        if not spec.restart:
            record.state = "stopped"
            self._publish()
            raise ProcessExited(spec.name, popen.returncode, reason)
        record.exits.append(now)
        exits = self._recent(record, now)
        delay = min(2.0 ** (exits - 1), MAX_BACKOFF)
        looping = exits >= supervision.CRASH_LOOP_EXITS
        record.state = "crash-looping" if looping else "restarting"
        record.next_start = now + delay
        note = (
            f" ({exits} exits in {RESTART_WINDOW:.0f}s: crash-looping, the others keep running)"
            if looping
            else ""
        )
        repeated = " (same output as before, not repeated)" if same else ""
        restart = f"restarting it in {delay:.0f}s{note}{repeated}"
        self.say("taskdeck", f"{spec.name} exited with code {popen.returncode}{because}; {restart}")
        self._publish()

    def _publish(self) -> None:
        if self.status_dir is None:
            return
        with contextlib.suppress(OSError):  # a full disk must not stop the supervisor
            supervision.write(self.status_dir, {name: r.public() for name, r in self.supervised.items()})

    def stop(self) -> None:
        """Stop every process, newest first; SIGKILL what is left after the grace period."""
        self._stopping = True
        for spec, popen in reversed(self.procs):
            if popen.poll() is None:
                self.say("taskdeck", f"stopping {spec.name}")
                _signal_group(popen, signal.SIGTERM)
                try:
                    popen.wait(self.grace)
                except subprocess.TimeoutExpired:
                    self.say("taskdeck", f"{spec.name} did not stop in {self.grace:.0f}s: killing it")
            # Pool children of a worker are in its group: nothing of it stays behind.
            _signal_group(popen, signal.SIGKILL)
            popen.wait()
        if self.status_dir is not None:
            supervision.remove(self.status_dir)

    def handle_signals(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Make SIGINT/SIGTERM end ``wait()`` so the caller can ``stop()``."""

        def handler(signum: int, frame: Any) -> None:
            self._stopping = True

        for signum in signals:
            signal.signal(signum, handler)


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)
