"""The local admin account of the embedded default, made by ``taskdeck up`` on its first start.

On a fresh machine (embedded Redis on a unix socket, SQLite under the data
folder) nobody has an account yet, and the dashboard admits staff only.
:func:`ensure_local_admin` creates one superuser with a random password and
prints the login once. It does nothing anywhere else: on a real broker or
database, accounts are made on purpose (``manage.py createsuperuser``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.contrib.auth import get_user_model

USERNAME = "admin"


class Writer(Protocol):
    def write(self, text: str) -> object: ...


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def is_embedded_default() -> bool:
    """True on the embedded default: broker ``redis+socket://…`` and a SQLite database."""
    broker = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    engine = settings.DATABASES.get("default", {}).get("ENGINE", "")
    return broker.startswith("redis+socket://") and engine == "django.db.backends.sqlite3"


def ensure_local_admin(stdout: Writer) -> Credentials | None:
    """Create the local superuser ``admin`` with a random password if no superuser exists yet.

    Prints the login to ``stdout`` and returns it, the only time it is shown
    (the database keeps a hash). Returns None, creating nothing, when a
    superuser exists already, and refuses (None, with a line saying why) off
    the embedded default. A lost password: ``manage.py changepassword admin``.
    """
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    if not is_embedded_default():
        stdout.write(
            "no superuser yet, and not on the embedded default (broker redis+socket:// and SQLite): "
            "no local admin is created; make a staff account with `manage.py createsuperuser`\n"
        )
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(**{users.USERNAME_FIELD: USERNAME, "password": password})
    stdout.write(
        f"created the local dashboard account (shown once): user {USERNAME}  password {password}\n"
        f"  change it with `manage.py changepassword {USERNAME}`\n"
    )
    return Credentials(USERNAME, password)
