"""Run the processes of a project together, the way ``taskdeck up`` does.

Each process runs in a session of its own (so Ctrl-C in the terminal reaches
only the supervisor, which stops the others in order) and gets SIGKILL if the
supervisor itself dies (``PR_SET_PDEATHSIG``): no process outlives ``up``.
Their output is interleaved line by line, each line prefixed with the
process's name.

A process marked ``restart`` (workers, beat, the recorder, the web server)
that exits on its own is started again after a back-off of 1, 2, 4 … up to
30 seconds, what is left of its process group killed first; one that exits
``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds is given up on. When
a process is given up on, or one not marked ``restart`` exits (the embedded
broker), the others are stopped and ``up`` exits with an error, naming it.

Stopping: SIGTERM to each process group, in the reverse order of start (web
and beat first, workers next, which finish their current tasks, the broker
last), then SIGKILL to whatever is left after ``grace`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

PR_SET_PDEATHSIG = 1
COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93", "95", "92"]
#: A process that exits this many times within RESTART_WINDOW seconds is given up on.
MAX_RESTARTS = 5
RESTART_WINDOW = 120.0
MAX_BACKOFF = 30.0


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
    def __init__(self, name: str, code: int | None) -> None:
        super().__init__(f"{name} exited with code {code}")
        self.name = name
        self.code = code


class Fleet:
    """Start, watch and stop a set of processes with interleaved, prefixed output."""

    def __init__(self, out: IO[str] | None = None, grace: float = 30.0, colour: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.grace = grace
        self.colour = self.out.isatty() if colour is None else colour
        self.procs: list[tuple[Spec, subprocess.Popen[bytes]]] = []
        self._lock = threading.Lock()
        self._width = 8
        self._stopping = False
        self._envs: dict[str, dict[str, str]] = {}
        self._exits: dict[str, deque[float]] = {}

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
        popen = self._spawn(spec)
        self.procs.append((spec, popen))
        if spec.ready is not None:
            deadline = time.monotonic() + ready_timeout
            while not spec.ready():
                if popen.poll() is not None:
                    raise ProcessExited(spec.name, popen.returncode)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{spec.name} was not ready after {ready_timeout:.0f}s")
                time.sleep(0.1)
        return popen

    def _spawn(self, spec: Spec) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(
            spec.argv,
            env={**self._envs[spec.name], **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump, args=(spec.name, popen), daemon=True).start()
        return popen

    def _pump(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in iter(popen.stdout.readline, b""):
            self.say(name, raw.decode(errors="replace"))

    def wait(self) -> None:
        """Block until ``stop()`` is called, restarting what may be restarted.

        Raises ProcessExited when a process exits on its own and may not be
        restarted (not marked ``restart``, or given up on).
        """
        while not self._stopping:
            for index, (spec, popen) in enumerate(self.procs):
                if popen.poll() is None or self._stopping:
                    continue
                delay = self._backoff(spec)
                if delay is None:
                    raise ProcessExited(spec.name, popen.returncode)
                code = popen.returncode
                self.say("taskdeck", f"{spec.name} exited with code {code}; restarting it in {delay:.0f}s")
                _signal_group(popen, signal.SIGKILL)  # its pool children, if any are left
                popen.wait()
                if not self._sleep(delay):
                    return
                self.procs[index] = (spec, self._spawn(spec))
            time.sleep(0.2)

    def _backoff(self, spec: Spec) -> float | None:
        """Seconds to wait before restarting ``spec``, or None to give up on it."""
        if not spec.restart:
            return None
        now = time.monotonic()
        exits = self._exits.setdefault(spec.name, deque())
        exits.append(now)
        while exits and now - exits[0] > RESTART_WINDOW:
            exits.popleft()
        if len(exits) > MAX_RESTARTS:
            self.say("taskdeck", f"{spec.name} exited {len(exits)} times in {RESTART_WINDOW:.0f}s: giving up")
            return None
        return min(2.0 ** (len(exits) - 1), MAX_BACKOFF)

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on ``stop()``; False if stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self._stopping

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

    def handle_signals(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Make SIGINT/SIGTERM end ``wait()`` so the caller can ``stop()``."""

        def handler(signum: int, frame: Any) -> None:
            self._stopping = True

        for signum in signals:
            signal.signal(signum, handler)


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)
