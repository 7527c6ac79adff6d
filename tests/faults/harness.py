"""What the fault tests share: worker processes they can kill, services of their own, reports.

Every service a fault test breaks is its own: a Redis server on a unix
socket in a temporary folder (the embedded broker's command line), a
PostgreSQL cluster in a temporary folder, network namespaces. The machine's
shared Redis, PostgreSQL and RabbitMQ are never stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from celery import current_app
from kombu import pools

from bench.workers import children, rss_kib
from tests.support.ledger import LEDGER_ARGS
from tests.support.services import ARTIFACTS, Proc, reset_pools, wait_for

#: Settings module of the workers and recorders these tests start.
WORKER_SETTINGS = "tests.faults.worker_settings"
SEP = "\x06\x16"  # kombu's separator between a queue name and its priority step
STEPS = (0, 3, 6, 9)


def report(name: str, counts: dict[str, Any]) -> None:
    """Print a test's counts and write them to tests/artifacts/faults-<name>.json."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(counts, indent=2, sort_keys=True, default=str)
    (ARTIFACTS / f"faults-{name}.json").write_text(text + "\n")
    print(f"\nfaults-{name}: {text}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` on Redis, every priority sub-queue included."""
    return sum(int(client.llen(queue + (f"{SEP}{step}" if step else ""))) for step in STEPS)


def forget_connections() -> None:
    """Close and forget every broker connection of this process.

    kombu keeps its connection pools in a process-wide group keyed by URL:
    closing the app's pool alone (``reset_pools``) leaves the closed pool
    there, to be handed back when the app returns to that URL.
    """
    reset_pools()
    pools.reset()


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Make the test process's Celery app publish to (and ping on) ``url`` for a while."""
    conf = current_app.conf
    old = conf.broker_url
    forget_connections()
    conf.broker_url = url
    try:
        yield
    finally:
        forget_connections()
        conf.broker_url = old


def busy(pids: list[int]) -> int | None:
    """A pool process inside a ledger task (it sleeps; an idle one waits on its pipe), or None."""
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/wchan").read_text() == "hrtimer_nanosleep":
                return pid
        except OSError:
            continue
    return None


def all_busy(pids: list[int], processes: int = 2) -> bool:
    """Every one of a worker's ``processes`` pool processes inside a ledger task."""
    return len(pids) == processes and all(busy([pid]) for pid in pids)


class Process(Proc):
    """A :class:`Proc` in a session of its own (so its whole group can be killed), optionally in a netns.

    Its log is appended to: a worker started again under the same name keeps one log.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, netns: str | None = None) -> None:
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        super().__init__(argv, env, log, append=True, new_session=True)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """``sig`` to the whole group, then SIGKILL to whatever of it is left."""
        if self.alive():
            self.kill_group(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._out.close()


class Worker(Process):
    """``celery -A core worker`` with the ledger loaded and the fault tests' settings."""

    def __init__(
        self,
        env: dict[str, str],
        log_prefix: str,
        queues: list[str] | None = None,
        concurrency: int = 2,
        name: str | None = None,
        netns: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        hostname = f"{name or 'f' + uuid.uuid4().hex[:6]}@faults"
        # An interpreter of the venv even inside a namespace (`ip netns exec` keeps the environment).
        argv = [sys.executable, "-m", "celery", "-A", "core", "worker"]
        argv += ["-Q", ",".join(queues or ["default"]), "-c", str(concurrency), "-n", hostname]
        argv += ["-l", "info", "--without-mingle", "--without-gossip", *LEDGER_ARGS, *(extra or [])]
        log = ARTIFACTS / f"{log_prefix}-{hostname}.log"
        log.unlink(missing_ok=True)  # a previous run's worker of the same name
        super().__init__(argv, env, log, netns=netns)
        self.hostname = hostname

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for(
            lambda: not self.alive() or self.answers_ping(),
            timeout,
            f"worker {self.hostname} to answer ping (log: {self.log})",
        )
        assert self.alive(), f"worker exited, see {self.log}"

    def answers_ping(self) -> bool:
        """Whether the worker answers; False too while this process's broker connection is broken.

        After a broker restart, the pooled connection breaks on its first use
        (``BrokenPipeError``) and reconnects on the next.
        """
        try:
            return bool(current_app.control.ping([self.hostname], timeout=0.5))
        except (OSError, redis.ConnectionError, *current_app.connection_for_read().connection_errors):
            return False

    def pool(self) -> list[int]:
        return children(self.pid)


class RedisServer:
    """A Redis server of the test's own, started with the embedded broker's command line.

    On a unix socket in ``folder`` (append-only file there too), unless
    ``bind`` gives an address and port to listen on instead.
    """

    def __init__(
        self,
        folder: Path,
        *,
        appendonly: bool = True,
        bind: tuple[str, int] | None = None,
        name: str = "redis",
    ) -> None:
        from taskdeck.brokers.embedded import server_command

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.socket = folder / "redis.sock"
        argv = server_command(self.socket)
        if not appendonly:
            argv[argv.index("--appendonly") + 1] = "no"
        if bind is not None:
            host, port = bind
            argv[argv.index("--port") + 1] = str(port)
            argv += ["--bind", host, "--protected-mode", "no"]
        self.bind = bind
        self.argv = argv
        self.log = ARTIFACTS / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.proc: Process | None = None
        self.crashes: list[bytes] = []
        self.start()

    @property
    def url(self) -> str:
        if self.bind is not None:
            return f"redis://{self.bind[0]}:{self.bind[1]}/0"
        return f"redis+socket://{self.socket}"

    def client(self) -> redis.Redis:
        if self.bind is not None:
            return redis.Redis(host=self.bind[0], port=self.bind[1], socket_timeout=5)
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.RedisError, OSError):
            return False

    def start(self) -> None:
        self.proc = Process(self.argv, dict(os.environ), self.log)
        wait_for(lambda: not self.proc.alive() or self.answers(), 30, f"redis-server ({self.log})")
        assert self.proc.alive(), f"redis-server exited, see {self.log}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (the append-only file is flushed); SIGKILL: a crash.

        After a crash, what its append-only files hold is kept (``crashes``): what the next
        start loads, to tell a message Redis never wrote from one lost afterwards.
        """
        assert self.proc is not None
        self.proc.kill_group(sig)
        self.proc.popen.wait(30)
        self.proc.stop()
        if sig == signal.SIGKILL:
            self.crashes.append(b"".join(p.read_bytes() for p in sorted(self.folder.glob("appendonlydir/*"))))

    def unwritten(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` that no crash's append-only files held: published, never written.

        With ``appendfsync everysec`` Redis holds its writes back while an fsync takes longer
        than a second (a busy disk), up to 2 s: a crash of redis-server then loses the
        publishes of those seconds, though each publish had been answered. Measured here with
        fdatasync slowed to 3 s: 1,072 of 3,000 pushes of the last 1.5 s gone
        (docs/reliability.md).
        """
        return {i for i in ids if self.crashes and all(i.encode() not in data for data in self.crashes)}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10)


def sample(procs: dict[str, int], into: dict[str, list[int]]) -> None:
    """Append each process's RSS (KiB) to ``into[name]``."""
    for name, pid in procs.items():
        value = rss_kib(pid)
        if value is not None:
            into.setdefault(name, []).append(value)


def wait_quiet(predicate: Any, timeout: float, what: str, settle: float = 0) -> Any:
    """``wait_for`` then, with ``settle``, wait that long again and return the predicate's new value."""
    value = wait_for(predicate, timeout, what)
    if settle:
        time.sleep(settle)
        value = predicate() or value
    return value


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb in a temporary folder, its own port).

    PostgreSQL refuses to run as root, so as root its commands run as the
    ``postgres`` user. Stopping it is safe: no one else uses it.
    """

    def __init__(self, name: str = "pg") -> None:
        import glob
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        assert found, "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
        self.bin = Path(found[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="tdpg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.log = ARTIFACTS / f"{name}-{self.port}.log"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120, cwd=self.folder)

    def url(self, db: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: what a service manager's stop does (sessions are ended); ``immediate``: a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, db: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        with contextlib.suppress(OSError):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.folder / "server.log", self.log)
        shutil.rmtree(self.folder, ignore_errors=True)


class Web:
    """A browser-like HTTP client (cookies, CSRF) for a web server process of the test's own."""

    def __init__(self, base: str) -> None:
        import http.cookiejar
        import urllib.request

        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def login(self, username: str, password: str, path: str = "/taskdeck/login/") -> None:
        import urllib.parse
        import urllib.request

        self.get(path)
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        data = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token}
        ).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})
        with self.opener.open(request, timeout=30) as response:
            assert response.status == 200, response.status
        assert any(c.name == "sessionid" for c in self.jar), "login failed"

    def answers(self) -> bool:
        try:
            return self.get("/taskdeck/login/")[0] == 200
        except OSError:
            return False


class Relay:
    """Forwards TCP connections from ``listen`` to ``target`` on threads of the test process.

    Lets a worker inside a network namespace reach the machine's PostgreSQL
    (which listens on loopback only) over the namespace's link, so cutting
    the link cuts that worker off from the database too.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        import threading

        self.target = target
        self.server = socket.create_server(listen)
        self.sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        for sock in [self.server, *self.sockets]:
            # shutdown() first: close() alone leaves a socket another thread is reading from open.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class Namespace:
    """A network namespace joined to this one by a veth pair: a second host on this machine.

    ``host_ip`` is this side's address, ``ns_ip`` the namespace's. :meth:`cut`
    takes the link down. :meth:`close` kills every process left in the
    namespace and deletes it (the veth pair goes with it).
    """

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000:04d}{uuid.uuid4().hex[:3]}"
        self.name = f"tdf-{tag}"
        self.host_if, self.ns_if = f"tdf{tag}a", f"tdf{tag}b"
        octet = int(uuid.uuid4().hex[:2], 16)
        self.host_ip, self.ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.created = False
        try:
            self._ip("netns", "add", self.name)
            self.created = True
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            self._ip("link", "set", self.ns_if, "netns", self.name)
            self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            self._ip("link", "set", self.host_if, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def exec(self, *argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, *argv], check=True, capture_output=True, timeout=30)

    def cut(self) -> None:
        self._ip("link", "set", self.host_if, "down")

    def pids(self) -> list[int]:
        found = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30)
        return [int(p) for p in found.stdout.split()]

    def close(self) -> None:
        if not self.created:
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.SubprocessError):
            self._ip("netns", "del", self.name)
        with contextlib.suppress(subprocess.SubprocessError):
            self._ip("link", "del", self.host_if)  # gone with its peer already, normally
        self.created = False


def kept_running(started: list[Worker], start: Any, name: str, **kwargs: Any) -> Any:
    """A check that starts the last worker of ``started`` again whenever it has died, as systemd's
    ``Restart=always`` would (each start counted in ``started``); it returns False, so that it can
    be or'ed into any wait's predicate and look for as long as the test waits.

    A worker that meets a broker restart may take seconds to exit (one exited with
    ``AttributeError: 'NoneType' object has no attribute 'hostname'`` raised in kombu's restore
    of unacknowledged messages as its channel closed): one look a few seconds after the restart
    can miss it.
    """

    def revive() -> bool:
        if not started[-1].alive():
            started.append(start(name=f"{name}-{len(started)}", **kwargs))
        return False

    return revive


def settle(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; whether it held.

    Unlike ``wait_for`` it does not fail: the test writes its report first.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def broker_state(client: redis.Redis, queue: str = "default") -> dict[str, Any]:
    """What the Redis broker holds: waiting, unacknowledged, and the restore mutex's time to live."""
    return {
        "waiting": depth(client, queue),
        "unacked": int(client.hlen("unacked")),
        "unacked_mutex_ttl_s": int(client.ttl("unacked_mutex")),
    }


def received(*workers: Process) -> set[str]:
    """Task ids the workers logged as received (the consumer had the message, its task was known)."""
    import re

    pattern = re.compile(r"\[([0-9a-f-]{36})\] received")
    return {task_id for worker in workers for task_id in pattern.findall(worker.output())}


def losses(
    lost: list[str], *workers: Process, unwritten: frozenset[str] | set[str] = frozenset()
) -> dict[str, int]:
    """Lost tasks split by where they were lost.

    ``after_receipt``: a worker had received the message: late acknowledgement
    must have brought it back, so none may be lost there. ``in_transit``:
    never received by any worker, lost between Redis's BRPOP, which takes the
    message off the queue, and the worker's own record of it in the
    ``unacked`` hash, written after the reply arrives: a worker that dies, or
    a link that drops, while a reply is in flight loses that one message
    (kombu's Redis transport; at most one per consuming connection).
    ``unwritten``: published, but never in the append-only file of the Redis
    that crashed (``RedisServer.unwritten``), received or not: Redis's own
    window, which nothing can bring back; not counted in the other two.
    """
    seen = received(*workers)
    gone = [task_id for task_id in lost if task_id in unwritten]
    after = sum(1 for task_id in lost if task_id in seen and task_id not in unwritten)
    return {
        "lost_after_receipt": after,
        "lost_in_transit": len(lost) - after - len(gone),
        "lost_unwritten": len(gone),
    }


def drained(client: redis.Redis, queue: str = "default") -> bool:
    """Nothing waiting and nothing taken unacknowledged, twice a second apart: every task has ended.

    (With late acknowledgement a task still running is in the ``unacked`` hash.)
    """
    for attempt in range(2):
        if depth(client, queue) or client.hlen("unacked"):
            return False
        if not attempt:
            time.sleep(1)
    return True
