"""Run the processes of a project together, the way ``taskdeck up`` does.

Each process runs in a session of its own (so Ctrl-C in the terminal reaches
only the supervisor, which stops the others in order) and gets SIGKILL if the
supervisor itself dies (``PR_SET_PDEATHSIG``): no process outlives ``up``.
Their output is interleaved line by line, each line prefixed with the
process's name. When one of them exits on its own, the others are stopped and
``up`` exits with an error, naming it.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

PR_SET_PDEATHSIG = 1
COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93", "95", "92"]


@dataclass
class Spec:
    """A process to run: its name (the log prefix), command line and readiness check."""

    name: str
    argv: list[str]
    ready: Callable[[], bool] | None = None
    env: dict[str, str] = field(default_factory=dict)


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
        popen = subprocess.Popen(
            spec.argv,
            env={**env, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.procs.append((spec, popen))
        threading.Thread(target=self._pump, args=(spec.name, popen), daemon=True).start()
        if spec.ready is not None:
            deadline = time.monotonic() + ready_timeout
            while not spec.ready():
                if popen.poll() is not None:
                    raise ProcessExited(spec.name, popen.returncode)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{spec.name} was not ready after {ready_timeout:.0f}s")
                time.sleep(0.1)
        return popen

    def _pump(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in iter(popen.stdout.readline, b""):
            self.say(name, raw.decode(errors="replace"))

    def wait(self) -> None:
        """Block until a process exits on its own (raises ProcessExited) or ``stop()`` is called."""
        while not self._stopping:
            for spec, popen in self.procs:
                if popen.poll() is not None and not self._stopping:
                    raise ProcessExited(spec.name, popen.returncode)
            time.sleep(0.2)

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
