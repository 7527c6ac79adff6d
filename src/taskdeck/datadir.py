"""The data folder kept private: 0700, every file in it 0600, whatever the umask.

The folder of the embedded default holds the SQLite database (sessions,
password hashes), the Redis append-only files (raw message bodies) and the
generated secret key: nothing another local user may read.

* :func:`private_folder` makes the folder (and its parents' missing part) 0700;
* :func:`tighten` makes what is in it 0700 (folders) and 0600 (files), for
  folders made by an older version or under a loose umask;
* :func:`secret_key` reads the folder's secret key, generating it on first use.

``taskdeck up`` also runs its processes under umask 077, so what they create
later (Redis rewrites its append-only files, SQLite its WAL files) is born private.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from django.core.management.utils import get_random_secret_key

from taskdeck.errors import ConfigurationError

PRIVATE_UMASK = 0o077
SECRET_KEY_FILE = "secret_key"


def private_folder(path: Path) -> Path:
    """Make ``path`` if needed and set it to 0700 (only its owner may list or enter it)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def tighten(folder: Path) -> None:
    """Folders 0700 and regular files 0600 under ``folder`` (sockets and links are left as they are)."""
    private_folder(folder)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            with contextlib.suppress(FileNotFoundError):
                Path(root, name).chmod(0o700)
        for name in files:
            path = Path(root, name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(path.lstat().st_mode):
                    path.chmod(0o600)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist (an empty file is an empty SQLite database).

    SQLite gives its WAL and shared-memory files the mode of the database
    file, so a database created this way stays private with its side files.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    path.chmod(0o600)


def secret_key(folder: Path) -> str:
    """The secret key kept in ``folder/secret_key``, generated (0600) the first time it is asked for.

    Several processes may start at once: the file is created exclusively and
    written complete before anyone reads it (written under a temporary name,
    then linked into place), so all of them end up with the same key.
    """
    path = Path(folder) / SECRET_KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    private_folder(Path(folder))
    temporary = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(get_random_secret_key() + "\n")
    try:
        os.link(temporary, path)  # fails if another process linked its key first: theirs wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return _read(path)


def _read(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ConfigurationError(f"{path} is empty: delete it and a new secret key is generated")
    return key
