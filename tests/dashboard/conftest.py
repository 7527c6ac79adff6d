"""The dashboard's tests: accounts with and without action permissions, and Debian's Chromium.

The browser is Playwright for Python driving ``/usr/bin/chromium`` (the
``chromium`` apt package; ``playwright install`` is never needed). It talks
to pytest-django's ``live_server``, which runs in this process on the test
database the workers and the recorder write to.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import ARTIFACTS, ROOT

CHROMIUM = os.environ.get("TASKDECK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]
SCREENSHOTS = ARTIFACTS / "screenshots"
#: Screenshots copied for the README.
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or set TASKDECK_CHROMIUM)")
    # Playwright's sync API keeps an asyncio loop on this thread, and Django
    # refuses ORM calls next to a running loop; the tests' ORM calls between
    # browser steps are plain synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 px; dialogs are recorded and dismissed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()

    tab.on("dialog", on_dialog)
    yield tab
    context.close()


@pytest.fixture
def accounts(django_user_model: Any) -> dict[str, Any]:
    """``operator``: staff with every dashboard permission; ``viewer``: staff, view only (read-only role)."""
    from django.contrib.auth.models import Permission

    perms = {p.codename: p for p in Permission.objects.filter(content_type__app_label="taskdeck")}
    operator = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    operator.user_permissions.add(
        *(perms[c] for c in ("view_dashboard", "retry_task", "revoke_task", "purge_queue", "control_worker"))
    )
    viewer = django_user_model.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(perms["view_dashboard"])
    clerk = django_user_model.objects.create_user("clerk", password=PASSWORD, is_staff=False)
    return {"operator": operator, "viewer": viewer, "clerk": clerk}


@pytest.fixture
def login(live_server: Any) -> Callable[[Any, str], None]:
    def log_in(tab: Any, username: str) -> None:
        tab.goto(f"{live_server.url}/taskdeck/login/")
        tab.fill("input[name=username]", username)
        tab.fill("input[name=password]", PASSWORD)
        tab.click("button[type=submit]")
        tab.wait_for_url(f"{live_server.url}/taskdeck/")

    return log_in


@pytest.fixture(scope="session")
def shoot() -> Callable[..., Path]:
    """Save a full-page screenshot in tests/artifacts/screenshots/.

    With ``docs`` and ``TASKDECK_UPDATE_SCREENSHOTS=1`` in the environment it
    is copied to docs/screenshots/ too (a plain ``make test`` leaves the
    tracked files alone).
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(tab: Any, name: str, docs: bool = False) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        if docs and os.environ.get("TASKDECK_UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
        return path

    return save


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Chart buckets and workers' queues are cached between requests: not between tests."""
    from django.core.cache import caches

    for cache in caches.all(initialized_only=True):
        cache.clear()
    yield
