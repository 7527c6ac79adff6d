"""Every dashboard page, for everyone: axe-core, keyboard only, and tables that fit 1280 px.

After the demo workload ran on a real worker, recorded by the real recorder:

- axe-core (WCAG 2.0/2.1 A and AA, best practices) finds nothing on any page
  of the dashboard's URLconf (a new page is checked without touching this
  file, or the test says which sample value it lacks), in light and dark
  mode, at desktop and phone width;
- with the keyboard alone every link, button, field and summary of every
  page is reached, each with a visible focus; filters, the retry, the
  workflow graph's nodes and the charts' tables work from the keyboard;
- at 1280 px no table is wider than its panel (screenshots kept in
  tests/artifacts/screenshots/).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from maintenance.tasks import rebuild_search_index
from taskdeck import deadletter
from taskdeck.demo import leaves, workload
from taskdeck.models import AuditEntry, DeadLetter, TaskRun, Worker
from taskdeck.monitor.merge import FINAL
from tests.dashboard.a11y import (
    AXE,
    FOCUS_STYLE,
    FROM_THE_TOP,
    MODES,
    REACHABLE,
    axe,
    dashboard_routes,
    url_of,
)
from tests.support.services import ARTIFACTS, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]


@pytest.fixture
def demo(start_worker, start_recorder) -> dict[str, str]:
    """The demo workload, finished and recorded; the sample value of each URL parameter."""
    worker = start_worker(QUEUES, concurrency=2)
    start_recorder()
    sent = [r.id for job in workload() for r in leaves(job.send())]
    done = TaskRun.objects.filter(task_id__in=sent, state__in=FINAL)
    wait_for(lambda: done.count() == len(sent), 150, f"the {len(sent)} runs of the demo to finish")
    wait_for(Worker.objects.filter(hostname=worker.hostname).exists, 60, "the worker recorded")
    # A message a worker refused, kept in the dead-letter store as the worker would keep it.
    deadletter.store(
        "message", "body is not valid JSON", source=worker.hostname, body=b"{not json", task="x.y"
    )
    # A message waiting on a queue nothing declares or consumes (the message browser's pages).
    waiting = rebuild_search_index.apply_async((1,), queue="waiting_room")
    callback = TaskRun.objects.get(name="catalog.tasks.publish_gallery")
    feed = TaskRun.objects.get(name="catalog.tasks.import_feed")
    return {
        "task_id": callback.task_id,
        "failed_id": feed.task_id,
        "hostname": worker.hostname,
        "name": "default",
        "pk": str(DeadLetter.objects.latest("id").pk),
        "feed_exc": feed.exception.split("(")[0],
        "queue": "waiting_room",
        "ref": waiting.id,
    }


def pages(samples: dict[str, str], live_url: str) -> dict[str, str]:
    """Every GET page of the dashboard (from its URLconf), plus a failed task and a filtered list."""
    extra_query = {
        "retry-group-confirm": f"?since=24h&name=catalog.tasks.import_feed&exc={samples['feed_exc']}",
        "failure-group": f"?since=24h&name=catalog.tasks.import_feed&exc={samples['feed_exc']}",
    }
    found = {
        route.name: live_url + url_of(route, samples) + extra_query.get(route.name, "")
        for route in dashboard_routes()
    }
    found["task (failed)"] = live_url + url_of(
        next(r for r in dashboard_routes() if r.name == "task"), {"task_id": samples["failed_id"]}
    )
    found["tasks (filtered)"] = found["tasks"] + "?state=FAILURE&q=import"
    return found


def settle(page: Any) -> None:
    """Wait for what a page loads after it is shown: charts, consumers, the banner."""
    page.wait_for_load_state("networkidle")
    if page.locator("[data-overview]").count():
        page.wait_for_selector("[data-overview][data-loaded='1']")


def visit(page: Any, name: str, url: str) -> bool:
    """Open ``url`` if it is a page: not an action (POST only) nor a part that pages load."""
    probe = page.request.get(url, max_redirects=0)
    if probe.status == 405 or "<html" not in probe.text()[:300].lower():
        return False
    response = page.goto(url)
    assert response.status == 200, f"{name}: HTTP {response.status}"
    settle(page)
    return True


@pytest.mark.timeout(600)  # every page in four modes, on a shared 2-core machine
def test_axe_finds_nothing_on_any_page_in_any_mode(demo, browser, live_server, accounts, login, shoot):
    AuditEntry.objects.create(
        username="operator", action="retry", target=demo["failed_id"], ok=False, message="refused: a reason"
    )
    contexts = {}
    report: dict[str, Any] = {}
    checked = []
    overflow: list[str] = []
    for mode, (width, height, scheme) in MODES.items():
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        context.set_default_timeout(30_000)
        context.add_init_script(path=str(AXE))
        contexts[mode] = context
        page = context.new_page()
        # Logged out: the login page.
        page.goto(f"{live_server.url}/taskdeck/login/")
        report[f"login (anonymous) {mode}"] = axe(page)
        login(page, "operator")
        for name, url in pages(demo, live_server.url).items():
            if not visit(page, name, url):
                continue
            if name == "failures":  # the runs of a group, loaded when opened
                page.click("#failure-groups details summary")
                page.wait_for_selector("#failure-groups details .runs table")
            report[f"{name} {mode}"] = axe(page)
            checked.append(name)
            if mode == "light":
                overflow += tables_too_wide(page, name)
                shoot(page, f"a11y-{re.sub(r'[^a-z0-9]+', '-', name)}-1280")
        # A staff account without the dashboard's permission: the "not allowed" page.
        page.context.clear_cookies()
        login_as(page, live_server.url, "clerk")
        report[f"denied {mode}"] = axe(page)
        context.close()
    (ARTIFACTS / "axe-report.json").write_text(json.dumps(report, indent=1))
    # Every route is a page (checked), an action (POST only) or a part of a page; these at least are pages:
    pages_known = {"overview", "login", "tasks", "task", "workflow", "failures", "retry-group-confirm"}
    assert pages_known | {"queues", "purge-confirm", "workers", "shutdown-confirm", "audit"} <= set(checked)
    violations = {where: found for where, found in report.items() if found}
    elements = sum(len(v["nodes"]) for found in violations.values() for v in found)
    assert not violations, f"{elements} violating elements:\n" + "\n".join(
        f"{where}: {v['id']} ({v['impact']}) {v['help']}: {v['nodes'][:3]}"
        for where, found in violations.items()
        for v in found
    )
    assert not overflow, "tables wider than their panel at 1280 px:\n" + "\n".join(overflow)


def login_as(page: Any, url: str, username: str) -> None:
    from tests.dashboard.conftest import PASSWORD

    page.goto(f"{url}/taskdeck/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def tables_too_wide(page: Any, name: str) -> list[str]:
    """No table is wider than its scrolling panel, and no cell sticks out of the window."""
    too_wide = page.evaluate(
        """() => [...document.querySelectorAll('table')].filter(t => t.checkVisibility()).map(t => {
            const box = (t.closest('.scroll') || t.parentElement).getBoundingClientRect();
            const r = t.getBoundingClientRect();
            return {id: t.id || t.className, table: Math.round(r.right), box: Math.round(box.right),
                    window: document.documentElement.clientWidth};
        }).filter(t => t.table > t.box + 1 || t.table > t.window)"""
    )
    width = page.evaluate("document.documentElement.scrollWidth")
    return [f"{name}: {t}" for t in too_wide] + (
        [f"{name}: the page is {width} px wide"] if width > 1280 else []
    )


def assert_focus_visible(page: Any) -> dict[str, Any]:
    focus = page.evaluate(FOCUS_STYLE)
    assert focus is not None, "the focus left the page"
    assert focus["visible"] and focus["outline"], f"no visible focus on {focus}"
    return focus  # type: ignore[no-any-return]


def tab_through(page: Any, name: str) -> None:
    """Tab from the top of the page: every reachable element gets the focus, visibly, once."""
    page.evaluate("() => Object.defineProperty(document, 'hidden', {get: () => true})")  # no polling swaps
    count = page.evaluate(REACHABLE)
    page.evaluate(FROM_THE_TOP)
    seen: list[str] = []
    for _ in range(count + 5):
        page.keyboard.press("Tab")
        focus = page.evaluate(FOCUS_STYLE)
        if focus is None:  # past the last element: the browser's own UI
            break
        assert focus["visible"] and focus["outline"], f"{name}: no visible focus on {focus}"
        if focus["key"] in seen:
            break
        seen.append(focus["key"])
    missed = sorted(set(map(str, range(count))) - set(seen), key=int)
    details = page.evaluate(
        "keys => keys.map(k => document.querySelector(`[data-focus-key='${k}']`)?.outerHTML.slice(0, 120))",
        missed,
    )
    assert not missed, f"{name}: {len(missed)} of {count} elements never reached with Tab: {details}"


def test_keyboard_only(demo, page, live_server, accounts, shoot):
    url = f"{live_server.url}/taskdeck"
    # Log in with the keyboard: the username field has the focus.
    page.goto(f"{url}/login/")
    page.wait_for_function("document.activeElement && document.activeElement.name === 'username'")
    page.keyboard.type("operator")
    page.keyboard.press("Tab")
    from tests.dashboard.conftest import PASSWORD

    page.keyboard.type(PASSWORD)
    assert page.input_value("input[name=username]") == "operator"
    assert page.input_value("input[name=password]") == PASSWORD
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/")
    settle(page)

    # Every page: everything reachable with Tab, with a visible focus.
    for name, address in pages(demo, live_server.url).items():
        if not visit(page, name, address):
            continue
        tab_through(page, name)

    # The overview: each chart has a text summary and its numbers in a table, opened with the keyboard.
    page.goto(f"{url}/")
    settle(page)
    for chart in ("throughput", "failures", "latency"):
        summary = page.locator(f"[data-chart-summary={chart}]")
        assert summary.inner_text().startswith("Last 1h: "), summary.inner_text()
        press_on(page, f"[data-chart-table={chart}] summary")
        rows = page.locator(f"[data-chart-table={chart}] table tbody tr")
        assert rows.count() == 60  # a bucket a minute over the last hour
    finished = page.locator("[data-chart-table=throughput] table tbody td:nth-child(2)").all_inner_texts()
    assert sum(int(n) for n in finished) == TaskRun.objects.filter(state="SUCCESS").count()
    # The window choice: a link, followed with Enter.
    press_on(page, "a[href='?window=24h']")
    page.wait_for_url(re.compile(r"window=24h"))

    # The task list's filters: a state checkbox with Space, a select with the arrows then Enter.
    page.goto(f"{url}/tasks/")
    press_on(page, "input[name=state][value=FAILURE]", "Space")
    page.wait_for_url(re.compile(r"state=FAILURE"))
    badges = page.locator("#rows tr[data-task] .badge").all_inner_texts()
    assert badges and {b.lower() for b in badges} == {"failure"}
    focus_on(page, "select[name=queue]")
    before = page.url
    page.keyboard.press("ArrowDown")  # a choice, not yet a new page
    chosen = page.eval_on_selector("select[name=queue]", "s => s.value")
    assert chosen and page.url == before
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"queue={chosen}&"))
    queues = page.locator("#rows tr[data-task] td:nth-child(4)").all_inner_texts()
    assert queues and {q.split()[0] for q in queues} == {chosen}
    # Open a failed task from the list.
    press_on(page, f"#rows tr[data-task='{demo['failed_id']}'] a")
    page.wait_for_url(re.compile(demo["failed_id"]))
    assert "must be http(s)" in page.inner_text("#traceback")

    # The workflow graph: every node reached with Tab, its state in its name; Enter opens it.
    page.goto(f"{url}/tasks/{demo['task_id']}/workflow/")
    nodes = page.locator("#workflow a.node")
    assert nodes.count() == 5
    names = []
    focus_on(page, "#workflow a.node >> nth=0")
    for _ in range(5):
        focus = assert_focus_visible(page)
        names.append(page.evaluate("document.activeElement.getAttribute('aria-label')"))
        page.keyboard.press("Tab")
    assert all(re.search(r"\bsucceeded\b|\bsuccess\b", n, re.I) for n in names), names
    assert sum("resize_image" in n for n in names) == 4 and sum("publish_gallery" in n for n in names) == 1
    press_on(page, "#workflow a.node >> nth=0")
    page.wait_for_url(re.compile(r"/tasks/[^/]+/$"))

    # The failures page: the latest runs of a group open with Enter, a retry is a button.
    page.goto(f"{url}/failures/")
    press_on(page, "#failure-groups details summary")
    page.wait_for_selector("#failure-groups details[open] .runs table")
    shoot(page, "a11y-keyboard-failures")

    # Retry a failed task from its page with the keyboard: the action is taken and audited.
    page.goto(f"{url}/tasks/{demo['failed_id']}/")
    focus_on(page, "#retry")
    focus = assert_focus_visible(page)
    assert focus["id"] == "retry"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/taskdeck/tasks/(?!" + demo["failed_id"] + r")[^/]+/$"))
    assert AuditEntry.objects.get(action="retry", target=demo["failed_id"]).ok


def press_on(page: Any, selector: str, key: str = "Enter") -> None:
    """Tab to ``selector`` and press ``key`` on it."""
    focus_on(page, selector)
    page.keyboard.press(key)


def focus_on(page: Any, selector: str) -> None:
    """Tab (from the top of the page) until ``selector`` has the focus: it is reachable, not clicked."""
    target = page.locator(selector).first
    target.wait_for()
    page.evaluate(FROM_THE_TOP)
    for _ in range(400):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            assert_focus_visible(page)
            return
    raise AssertionError(f"{selector} is never reached with Tab")


def test_axe_finds_nothing_on_the_warning_banners(browser, live_server, accounts, login):
    """No recorder: the banner every page loads says so, readable in both schemes."""
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
        context.add_init_script(path=str(AXE))
        page = context.new_page()
        login(page, "operator")
        page.wait_for_selector("[data-banner=recorder]")
        page.wait_for_load_state("networkidle")
        found = axe(page)
        assert not found, f"{scheme}: {found}"
        context.close()
