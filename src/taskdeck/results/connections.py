"""How a worker holds its database connections: Django's request semantics, per task.

Celery's Django fix-up closes every database connection before and after
each task (``task_prerun``/``task_postrun``). On PostgreSQL that is a new
connection — a forked server process, authentication, session set-up — for
every task, which was over half of a results-in-the-database worker's time.
Under prefork with Django's psycopg pool it even closes the whole pool.

:class:`WorkerConnections` treats each task as Django treats a request
(``close_old_connections``): a connection is kept, and closed only when it is
unusable (an error left it broken), obsolete (older than ``CONN_MAX_AGE``), or
— checked without a round trip — when the server hung up on it while it was
idle (a database restart, ``pg_terminate_backend``). With Django's connection
pool (``OPTIONS["pool"]``, where ``CONN_MAX_AGE`` is 0) the same rule hands the
connection back to the process's pool after each task, and the pool is never
closed between tasks.

Forks: a child process never uses what it inherited. It closes the inherited
sockets' file descriptors before finishing the connections, so nothing is sent
on a socket the parent still uses (Celery does this for plain connections; for
a pool's idle connections we do it too, where Celery's ``close_pool()`` would
have sent each a Terminate message through the parent's sockets).

``TASKDECK["WORKER_DB_CONNECTIONS"] = "close"`` restores Celery's behaviour
(``CELERY_DB_REUSE_MAX`` then applies as Celery documents it).
"""

from __future__ import annotations

import contextlib
import os
import select
from typing import Any

from celery import Celery
from celery.fixups import django as celery_django
from celery.fixups.django import DjangoFixup, DjangoWorkerFixup

REUSE = "reuse"
CLOSE = "close"
POLICIES = (REUSE, CLOSE)


def fixup(app: Celery, env: str = "DJANGO_SETTINGS_MODULE") -> DjangoFixup | None:
    """Celery's Django fix-up with taskdeck's worker connection policy.

    Name it in ``Celery(fixups=[...])`` (``create_celery_app`` does) in place
    of ``celery.fixups.django:fixup``; the conditions are Celery's.
    """
    if not os.environ.get(env) or "django" in app.loader_cls.lower():
        return None
    import django

    celery_django._verify_django_version(django)
    return Fixup(app).install()


class Fixup(DjangoFixup):
    """Celery's Django fix-up whose worker part is :class:`WorkerConnections`."""

    _worker_fixup: DjangoWorkerFixup | None

    @property
    def worker_fixup(self) -> DjangoWorkerFixup:
        # Created when the worker starts, as Celery does: reading app.conf any
        # earlier would configure the app before config_from_object().
        if self._worker_fixup is None:
            self._worker_fixup = WorkerConnections(self.app)
        return self._worker_fixup

    @worker_fixup.setter
    def worker_fixup(self, value: DjangoWorkerFixup) -> None:
        self._worker_fixup = value


class WorkerConnections(DjangoWorkerFixup):
    """Celery's worker fix-up, keeping connections between tasks (see the module docstring)."""

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        self._policy: str | None = None
        from django.db.backends.signals import connection_created

        connection_created.connect(_connected, dispatch_uid="taskdeck.results.connections")
        if any(c.connection is not None for c in self._db.connections.all(initialized_only=True)):
            _connected(None)  # opened before this fix-up was made (at start-up)

    @property
    def policy(self) -> str:
        """``TASKDECK["WORKER_DB_CONNECTIONS"]``, read once Django is set up (never at import)."""
        if self._policy is None:
            from taskdeck import conf

            self._policy = str(conf.get()["WORKER_DB_CONNECTIONS"])
        return self._policy

    def on_task_prerun(self, sender: Any, **kwargs: Any) -> None:
        if self.policy == CLOSE:
            return super().on_task_prerun(sender, **kwargs)
        if not getattr(sender.request, "is_eager", False):
            self.close_old_connections()

    def on_task_postrun(self, sender: Any, **kwargs: Any) -> None:
        if self.policy == CLOSE:
            return super().on_task_postrun(sender, **kwargs)
        if not getattr(sender.request, "is_eager", False):
            self.close_old_connections()
            self.close_cache()

    def close_old_connections(self) -> None:
        """Django's ``close_old_connections``, plus a hang-up check that costs no round trip.

        Nothing to do in a process that never opened a connection (a pool
        process whose tasks and result backend do not touch the database: the
        write-behind and record backends'): asking Django which connections
        exist, twice per task, was 5% of such a process's CPU (docs/benchmarks.md).
        """
        if _connected_in != os.getpid():
            return
        for conn in self._db.connections.all(initialized_only=True):
            if conn.connection is not None and not conn.in_atomic_block and _hung_up(conn):
                # The server closed it while idle: Django would only find out
                # when the next query fails, i.e. in the next task.
                self._close(conn)
                continue
            try:
                conn.close_if_unusable_or_obsolete()
            except self.interface_errors:
                pass
            except self.DatabaseError:
                self._close(conn)

    def on_worker_process_init(self, **kwargs: Any) -> None:
        # Before Celery's own handling (close inherited descriptors, then close
        # the connections): the idle connections of an inherited pool share
        # sockets with the parent too.
        for conn in self._db.connections.all():
            pool = getattr(type(conn), "_connection_pools", {}).get(conn.alias)
            for idle in list(getattr(pool, "_pool", ()) or ()):
                _close_descriptor(idle)
        super().on_worker_process_init(**kwargs)

    def _close(self, conn: Any) -> None:
        try:
            conn.close()
        except (self.DatabaseError, *self.interface_errors):
            # A broken connection may fail to close cleanly; it is gone either way.
            conn.connection = None


#: The process that last opened a database connection (``connection_created``); a forked
#: child starts with its parent's pid here, and closes what it inherited.
_connected_in: int | None = None


def _connected(sender: Any, **kwargs: Any) -> None:
    global _connected_in
    _connected_in = os.getpid()


def _hung_up(conn: Any) -> bool:
    """Whether an idle PostgreSQL connection has data waiting: the server hung up (or notified).

    An idle connection in autocommit mode has nothing to read unless the
    server sent something on its own: the FATAL message and EOF of a
    terminated backend, or rarely a NOTIFY or parameter change — in which
    case reconnecting is merely unnecessary, never wrong.
    """
    if conn.vendor != "postgresql":
        return False  # SQLite: no server to hang up
    try:
        fd = conn.connection.fileno()
    except Exception:  # noqa: BLE001 - a connection that cannot say its socket is unusable
        return True
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _close_descriptor(raw: Any) -> None:
    with contextlib.suppress(AttributeError, OSError, TypeError, ValueError):
        os.close(raw.fileno())
