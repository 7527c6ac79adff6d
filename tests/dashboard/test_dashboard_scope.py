"""Scoped access: a team that owns ``billing.*`` sees and acts on those runs only, on every page and API call.

The URLs are read from the URLconf (the dashboard's namespace, as the
accessibility test does) and from the API's own OpenAPI schema, so a page or
an operation added later is checked here without a change to this file: asked
for another team's run, queue or dead letter, each one answers 404 (or 403),
or a page with nothing of it in it; each action is refused and audited. The
same URLs asked by a user without a scope find the other team's things, so
each 404 here is the scope's doing (for the parameters this test makes an
object for; a new kind of parameter gets a value of the other team's that
must still give nothing away).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import pytest
from celery import current_app
from django.contrib.auth.models import Group, Permission
from django.core.cache import caches
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from taskdeck import conf
from taskdeck.api import api
from taskdeck.models import (
    AccessScope,
    AlertIncident,
    ApiToken,
    AuditEntry,
    DeadLetter,
    QueueSample,
    TaskRollup,
    TaskRollupAll,
    TaskRun,
    TaskTotal,
    Worker,
)
from taskdeck.policy.scope import Scope, split_patterns, validate_patterns
from tests.dashboard.a11y import dashboard_routes, url_of
from tests.dashboard.conftest import PASSWORD

#: Text that only the other team's things carry: none of it may reach a billing user.
FOREIGN = ("zz-foreign", "zz_secret")
MINE = "billing.charge"
ACTION_PERMISSIONS = ("view_dashboard", "retry_task", "revoke_task", "purge_queue", "control_worker")


@dataclass
class World:
    mine: dict[str, str]
    foreign: dict[str, str]
    scoped: Any
    unscoped: Any


def _run(task_id: str, name: str, queue: str, now: dt.datetime, **fields: Any) -> TaskRun:
    return TaskRun.objects.create(
        task_id=task_id,
        name=name,
        queue=queue,
        state=fields.pop("state", "FAILURE"),
        state_at=now.timestamp(),
        first_seen_at=now,
        sent_at=now,
        finished_at=fields.pop("finished_at", now),
        exception=fields.pop("exception", "ValueError('card declined')"),
        args="('x',)",
        kwargs="{}",
        **fields,
    )


@pytest.fixture
def world(db: Any, django_user_model: Any, broker: str) -> World:
    """Runs, queues, waiting messages, rollups, totals, dead letters and audit entries of two teams;
    billing's scope."""
    now = timezone.now()
    # A message waiting in each team's queue (no worker runs here): the message browser's pages.
    waiting = {
        queue: current_app.send_task(name, ("x",), queue=queue).id
        for name, queue in ((MINE, "billing"), ("foreign.tasks.zz_secret", "zz-foreign-q"))
    }
    minute = now.replace(second=0, microsecond=0)
    # Sent by the other team's run: its id is that run's, not to be told.
    _run("mine-run-1", MINE, "billing", now, parent_id="zz-foreign-run", root_id="zz-foreign-run")
    _run("mine-run-2", "billing.refund", "billing", now, state="STARTED", finished_at=None, worker="w1@host")
    _run("zz-foreign-run", "foreign.tasks.zz_secret", "zz-foreign-q", now, exception="KeyError('zz_secret')")
    for i in range(2):  # the other team's runs on the same worker now
        _run(f"zz-foreign-active-{i}", "foreign.tasks.zz_secret", "zz-foreign-q", now, state="STARTED",
             finished_at=None, worker="w1@host")  # fmt: skip
    for name, queue in ((MINE, "billing"), ("foreign.tasks.zz_secret", "zz-foreign-q")):
        QueueSample.objects.create(sampled_at=now, queue=queue, ready=3, by_priority={"0": 3})
        TaskRollup.objects.create(minute=minute, name=name, queue=queue, succeeded=5, failed=1)
        TaskTotal.objects.create(name=name, queue=queue, state="SUCCESS", count=5)
    # The two teams' minute rows added up, as the recorder writes them beside those per task.
    TaskRollupAll.objects.create(minute=minute, name="", queue="", succeeded=10, failed=2)
    letters = {
        kind: DeadLetter.objects.create(
            created_at=now,
            kind="message",
            reason=f"{kind} letter: body is not valid JSON",
            source="w1@host",
            task=task,
            task_id=f"{kind}-letter-task",
            properties={"routing_key": queue},
            # Sent by the other team's run: its id is that run's, not to be told.
            headers={
                "id": f"{kind}-letter-task",
                "task": task,
                "parent_id": "zz-foreign-run",
                "root_id": "zz-foreign-run",
            },  # fmt: skip
            body=b"{not json",
        )
        for kind, task, queue in (
            ("mine", MINE, "billing"),
            ("zz-foreign", "foreign.tasks.zz_secret", "zz-foreign-q"),
        )
    }
    Worker.objects.create(
        hostname="w1@host",
        online=True,
        pool="prefork",
        concurrency=4,
        active=3,  # its heartbeat's count: both teams' runs
        processed=41,
        queues=["billing", "zz-foreign-q"],
    )
    AuditEntry.objects.create(
        username="someone", action="revoke", target="zz-foreign-run", message="foreign.tasks.zz_secret: ok"
    )
    caches[conf.dashboard()["CACHE"]].set(
        "taskdeck:dashboard:consumers", {"billing": ["w1@host"], "zz-foreign-q": ["w1@host"]}, 30
    )

    perms = Permission.objects.filter(content_type__app_label="taskdeck")
    team = Group.objects.create(name="billing-team")
    team.permissions.set(perms)
    AccessScope.objects.create(group=team, tasks="billing.*", queues="billing")
    # No password: hashing one costs a second a test; the clients log in without it.
    billing = django_user_model.objects.create_user("billing", is_staff=True)
    billing.groups.add(team)
    ops = django_user_model.objects.create_user("ops", is_staff=True)
    ops.user_permissions.set(perms)  # no scope row: everything
    scoped, unscoped = Client(), Client()
    scoped.force_login(billing)
    unscoped.force_login(ops)
    samples = {"hostname": "w1@host"}
    return World(
        mine={
            **samples,
            "task_id": "mine-run-1",
            "name": "billing",
            "queue": "billing",
            "pk": str(letters["mine"].pk),
            "ref": waiting["billing"],
        },
        foreign={
            **samples,
            "task_id": "zz-foreign-run",
            "name": "zz-foreign-q",
            "queue": "zz-foreign-q",
            "pk": str(letters["zz-foreign"].pk),
            "ref": waiting["zz-foreign-q"],
        },
        scoped=scoped,
        unscoped=unscoped,
    )


def _query(route: str, name: str) -> str:
    """The query a route reads its target from (a failure group: task name and exception)."""
    if route in ("failure-group", "retry-group-confirm"):
        exc = "KeyError" if "zz" in name else "ValueError"
        return f"?since=24h&name={name}&exc={exc}"
    return ""


#: Form data an action reads its target from.
POSTED = {"retry-group": lambda name: {"since": "24h", "name": name, "exc": "KeyError"}, "pool": None}
#: POST-only URLs that act on nothing of a team's.
NOT_ACTIONS = {"logout"}
#: Worker pages: workers serve every queue; a limited scope does not control them.
FLEET = {"shutdown-confirm", "pool", "shutdown"}


#: The ``?fragment=`` names the pages answer (taskdeck.dashboard.views.page).
FRAGMENTS = ("live", "rows", "graph")


def _foreign_leaks(text: str) -> list[str]:
    return [marker for marker in FOREIGN if marker in text]


def _known(params: Any, samples: dict[str, str]) -> bool:
    """Whether every parameter has a sample this test made (its object exists)."""
    return all(p in samples for p in params)


def _with_unknown(params: Any, samples: dict[str, str]) -> dict[str, str]:
    """``samples``, and for a parameter this test makes nothing for, a value of the other team's.

    Such a URL must still keep the other team's things out (a 404 or a page without them);
    give the parameter a real sample in :func:`world` to check the 404 is the scope's.
    """
    return {**{p: f"zz-foreign-{p}" for p in params}, **samples}


@pytest.mark.parametrize("route", dashboard_routes(), ids=lambda route: route.name)
def test_every_dashboard_url_keeps_a_scoped_user_inside_the_scope(route: Any, world: World) -> None:
    foreign_name = "foreign.tasks.zz_secret"
    url = url_of(route, _with_unknown(route.params, world.foreign)) + _query(route.name, foreign_name)
    answer = world.scoped.get(url)
    if answer.status_code == 405:  # an action: POST only
        if route.name in NOT_ACTIONS:
            return
        data = {"delta": "1", "since": "24h", "name": foreign_name, "exc": "KeyError"}
        before = set(AuditEntry.objects.values_list("id", flat=True))
        answer = world.scoped.post(url, data)
        assert answer.status_code in (403, 404), (route.name, answer.status_code)
        assert not _foreign_leaks(answer.content.decode())
        new = list(AuditEntry.objects.exclude(id__in=before))
        assert [(e.action, e.ok, e.username) for e in new] == [("refused", False, "billing")], route.name
        assert "scope" in new[0].message or "every queue" in new[0].message, new[0].message
        return
    assert answer.status_code in (200, 302, 403, 404), (route.name, answer.status_code)
    body = answer.content.decode()
    assert not _foreign_leaks(body), (route.name, _foreign_leaks(body))
    for fragment in FRAGMENTS:  # what htmx asks for every few seconds: the same data, a part of it
        part = world.scoped.get(url + ("&" if "?" in url else "?") + f"fragment={fragment}").content.decode()
        assert not _foreign_leaks(part), (route.name, fragment, _foreign_leaks(part))
    if route.params and route.name not in FLEET:
        assert answer.status_code == 404, (route.name, answer.status_code)
        if not _known(route.params, world.foreign):
            return
        # Without a scope the same URL finds it: the 404 above is the scope's.
        assert world.unscoped.get(url).status_code == 200, route.name
        mine = world.scoped.get(url_of(route, world.mine) + _query(route.name, MINE))
        assert mine.status_code == 200, (route.name, mine.status_code)
        assert not _foreign_leaks(mine.content.decode()), (route.name, _foreign_leaks(mine.content.decode()))


def test_list_pages_show_the_scope_and_only_it(world: World) -> None:
    from django.urls import reverse

    for name in ("overview", "tasks", "failures", "queues", "dead-letters"):
        mine = world.scoped.get(reverse(f"taskdeck:{name}")).content.decode()
        everyone = world.unscoped.get(reverse(f"taskdeck:{name}")).content.decode()
        assert "billing" in mine and not _foreign_leaks(mine), name
        assert _foreign_leaks(everyone), name  # the page shows them to a user without a scope
    audit = world.scoped.get(reverse("taskdeck:audit")).content.decode()
    assert not _foreign_leaks(audit)
    workers = world.scoped.get(reverse("taskdeck:workers")).content.decode()
    assert "w1@host" in workers and "Shut down" not in workers  # the fleet, without its controls


def test_workers_show_the_scopes_runs_in_their_numbers(world: World, scoped_token: str) -> None:
    """A worker serves both teams: a billing user sees it, with billing's runs on it now, not the other
    team's; its processed count (every team's) is not told."""
    from django.urls import reverse

    auth = {"HTTP_AUTHORIZATION": f"Bearer {scoped_token}"}
    for client, headers in ((world.scoped, {}), (Client(), auth)):
        (worker,) = client.get("/taskdeck/api/workers", **headers).json()
        assert (worker["hostname"], worker["active"], worker["processed"]) == ("w1@host", 1, None)
    (everyone,) = world.unscoped.get("/taskdeck/api/workers").json()
    assert (everyone["active"], everyone["processed"]) == (3, 41)

    def cells(html: str) -> list[str]:
        row = html.split('data-worker="w1@host"')[1].split("</tr>")[0]
        return re.findall(r'<td class="num">([^<]*)</td>', row)

    for url in (reverse("taskdeck:workers"), reverse("taskdeck:workers") + "?fragment=live"):
        assert cells(world.scoped.get(url).content.decode()) == ["4", "1", "—"], url  # processes, active
        assert cells(world.unscoped.get(url).content.decode()) == ["4", "3", "41"], url
    for url in (reverse("taskdeck:overview"), reverse("taskdeck:overview") + "?fragment=live"):
        assert "1 online · 1 active of 4 processes" in world.scoped.get(url).content.decode(), url
        assert "1 online · 3 active of 4 processes" in world.unscoped.get(url).content.decode(), url


def test_the_overviews_counts_are_the_scopes(world: World) -> None:
    """Backlog, lost, stuck and recent failures: billing's numbers for billing, everyone's without a scope."""
    from django.urls import reverse

    now = timezone.now()
    _run("mine-stuck", MINE, "billing", now, state="STUCK", finished_at=None)
    for i in range(2):
        _run(
            f"zz-foreign-lost-{i}",
            "foreign.tasks.zz_secret",
            "zz-foreign-q",
            now,
            state="LOST",
            finished_at=None,
        )
        _run(
            f"zz-foreign-stuck-{i}",
            "foreign.tasks.zz_secret",
            "zz-foreign-q",
            now,
            state="STUCK",
            finished_at=None,
        )

    def counts(client: Client) -> tuple[str, ...]:
        html = client.get(reverse("taskdeck:overview") + "?fragment=live").content.decode()
        backlog = re.search(r"now: (\d+) ready · (\d+) unacked", html)
        assert backlog is not None
        lost = re.search(r'id="lost-count">(\d+)<', html)
        stuck = re.search(r'id="stuck-count">(\d+)<', html)
        assert lost is not None and stuck is not None
        failures = len(re.findall(r"<div class=\"wrap2 exc\"", html))
        return (backlog[1], lost[1], stuck[1], str(failures))

    assert counts(world.scoped) == ("3", "0", "1", "1")  # billing's queue; its STUCK run; mine-run-1
    assert counts(world.unscoped) == ("6", "2", "3", "2")


def test_a_run_of_the_scope_does_not_tell_the_id_of_the_run_that_sent_it(world: World) -> None:
    mine = world.scoped.get("/taskdeck/api/tasks/mine-run-1").json()
    assert (mine["parent_id"], mine["root_id"]) == ("", "")
    everyone = world.unscoped.get("/taskdeck/api/tasks/mine-run-1").json()
    assert (everyone["parent_id"], everyone["root_id"]) == ("zz-foreign-run", "zz-foreign-run")
    page = world.scoped.get("/taskdeck/tasks/mine-run-1/").content.decode()
    assert "Parent" not in page and not _foreign_leaks(page)
    assert "zz-foreign-run" in world.unscoped.get("/taskdeck/tasks/mine-run-1/").content.decode()


def test_a_search_by_another_teams_id_finds_what_an_unknown_id_finds(world: World) -> None:
    """An exact id of another team's run searches as any other text does (the ids starting with it),
    so the answer does not say whether that run exists."""
    now = timezone.now()
    _run("abcd-1234", "foreign.tasks.zz_secret", "zz-foreign-q", now)
    _run("abcd-1234-5", MINE, "billing", now)  # an id of billing's that starts with it
    for q in ("abcd-1234", "abcd-123"):
        found = world.scoped.get("/taskdeck/api/tasks", {"q": q}).json()["items"]
        assert [r["task_id"] for r in found] == ["abcd-1234-5"], q
        page = world.scoped.get("/taskdeck/tasks/", {"q": q}).content.decode()
        assert re.findall(r'data-task="([^"]+)"', page) == ["abcd-1234-5"], q
    found = world.unscoped.get("/taskdeck/api/tasks", {"q": "abcd-1234"}).json()["items"]
    assert [r["task_id"] for r in found] == ["abcd-1234"]  # without a scope: the id itself


def test_another_teams_refusal_on_a_run_of_the_scope_does_not_show_their_scope(
    world: World, django_user_model: Any
) -> None:
    """The other team tries to retry billing's run: refused, and audited with their scope's patterns,
    which the billing user's audit log and run page do not show; the billing user's own refusals, and
    the log without a scope, do."""
    from django.urls import reverse

    team = Group.objects.create(name="foreign-team")
    team.permissions.set(Permission.objects.filter(content_type__app_label="taskdeck"))
    AccessScope.objects.create(group=team, tasks="foreign.tasks.zz_secret*", queues="zz-foreign-q")
    other = django_user_model.objects.create_user("other", is_staff=True)
    other.groups.add(team)
    them = Client()
    them.force_login(other)
    assert them.post(reverse("taskdeck:retry", args=["mine-run-1"])).status_code == 404
    refused = AuditEntry.objects.get(username="other")
    assert (refused.action, refused.target) == ("refused", "mine-run-1") and "zz_secret" in refused.message
    assert world.scoped.post(reverse("taskdeck:retry", args=["zz-foreign-run"])).status_code == 404
    audit = world.scoped.get(reverse("taskdeck:audit")).content.decode()
    assert not _foreign_leaks(audit.replace("zz-foreign-run", "")), _foreign_leaks(audit)
    assert "retry refused: zz-foreign-run" in audit  # its own refusal (naming what it asked for)
    run = world.scoped.get(reverse("taskdeck:task", args=["mine-run-1"])).content.decode()
    assert not _foreign_leaks(run)
    assert "zz_secret*" in world.unscoped.get(reverse("taskdeck:audit")).content.decode()
    assert "zz_secret*" in world.unscoped.get(reverse("taskdeck:task", args=["mine-run-1"])).content.decode()


def test_the_audit_log_of_a_scope_holds_the_actions_on_its_messages_and_dead_letters(world: World) -> None:
    """Someone without a scope deletes a waiting message and a dead letter of each team: billing's log
    holds both of its own, none of the other team's."""
    from django.urls import reverse

    for samples in (world.mine, world.foreign):
        deleted = world.unscoped.post(
            reverse("taskdeck:message-delete", args=[samples["queue"], samples["ref"]])
        )
        assert deleted.status_code == 302
        assert (
            world.unscoped.post(reverse("taskdeck:dead-letter-delete", args=[samples["pk"]])).status_code
            == 302
        )
    assert AuditEntry.objects.filter(username="ops", ok=True).count() == 4
    audit = world.scoped.get(reverse("taskdeck:audit")).content.decode()
    assert f"dead letter {world.mine['pk']}" in audit and f"message {world.mine['ref']} on billing" in audit
    assert f"dead letter {world.foreign['pk']}<" not in audit and not _foreign_leaks(audit)
    everyone = world.unscoped.get(reverse("taskdeck:audit")).content.decode()
    assert f"dead letter {world.foreign['pk']}<" in everyone and "on zz-foreign-q" in everyone


def test_the_admin_shows_a_scoped_user_its_scope_only_and_no_way_to_widen_it(world: World) -> None:
    """The billing team holds every taskdeck permission, the admin's "view" ones too: each table of the
    app in Django's admin (read from the admin site, so a table added later is checked) lists and shows
    billing's rows only; API tokens and scopes, which would widen the scope, are not offered."""
    from django.contrib import admin
    from django.urls import reverse

    now = timezone.now()
    AlertIncident.objects.create(
        rule="depth", subject="zz-foreign-q", opened_at=now, message="zz-foreign-q: 9"
    )
    AlertIncident.objects.create(rule="depth", subject="billing", opened_at=now, message="billing: 9")
    widening = (ApiToken, AccessScope)
    for model in [m for m in admin.site._registry if m._meta.app_label == "taskdeck"]:
        name = model._meta.model_name
        changelist = reverse(f"admin:taskdeck_{name}_changelist")
        mine, everyone = world.scoped.get(changelist), world.unscoped.get(changelist)
        assert everyone.status_code == 200, name
        assert not _foreign_leaks(mine.content.decode()), (name, _foreign_leaks(mine.content.decode()))
        if model in widening:
            assert mine.status_code == 403, (name, mine.status_code)
            assert world.scoped.get(reverse(f"admin:taskdeck_{name}_add")).status_code == 403, name
            continue
        assert mine.status_code == 200, (name, mine.status_code)
        for row in model.objects.all():
            page = world.scoped.get(reverse(f"admin:taskdeck_{name}_change", args=[row.pk]))
            assert page.status_code in (200, 302), (name, row.pk, page.status_code)  # 302: "does not exist"
            assert not _foreign_leaks(page.content.decode()), (
                name,
                row.pk,
                _foreign_leaks(page.content.decode()),
            )
    for name in (
        "taskrun",
        "deadletter",
        "queuesample",
        "taskrollup",
        "tasktotal",
        "auditentry",
        "alertincident",
    ):
        page = world.unscoped.get(reverse(f"admin:taskdeck_{name}_changelist")).content.decode()
        assert _foreign_leaks(page), name  # without a scope they are listed: the test can see them
    billing = world.scoped.get(reverse("admin:taskdeck_alertincident_changelist")).content.decode()
    assert "billing: 9" in billing or ">billing<" in billing
    worker = world.scoped.get(reverse("admin:taskdeck_worker_change", args=[Worker.objects.get().pk]))
    assert worker.status_code == 200 and "w1@host" in worker.content.decode()
    # A forged POST issues no token and changes no scope.
    before = (ApiToken.objects.count(), list(AccessScope.objects.values_list("tasks", "queues")))
    assert world.scoped.post(reverse("admin:taskdeck_apitoken_add"), {"name": "mine"}).status_code == 403
    row = AccessScope.objects.get()
    change = reverse("admin:taskdeck_accessscope_change", args=[row.pk])
    data = {"group": row.group_id, "user": "", "tasks": "*", "queues": "*"}
    assert world.scoped.post(change, data).status_code == 403
    assert (ApiToken.objects.count(), list(AccessScope.objects.values_list("tasks", "queues"))) == before


def _api_operations() -> list[tuple[str, str]]:
    schema = api.get_openapi_schema(path_prefix="/taskdeck/api")
    return sorted((method.upper(), path) for path, ops in schema["paths"].items() for method in ops)


def _api_params(path: str) -> list[str]:
    return re.findall(r"\{([^}]+)\}", path)


def _api_url(path: str, samples: dict[str, str]) -> str:
    values = _with_unknown(_api_params(path), {**samples, "letter_id": samples["pk"]})
    return re.sub(r"\{([^}]+)\}", lambda match: values[match.group(1)], path)


@pytest.fixture
def scoped_token(world: World, django_user_model: Any) -> str:
    return ApiToken.issue("billing-scraper", owner=django_user_model.objects.get(username="billing"))


@pytest.mark.parametrize(("method", "path"), _api_operations(), ids=lambda v: v)
@pytest.mark.parametrize("who", ["session", "token"])
def test_every_api_operation_keeps_a_scoped_caller_inside_the_scope(
    method: str, path: str, who: str, world: World, scoped_token: str
) -> None:
    url = _api_url(path, world.foreign)
    if who == "token":
        client, auth = Client(), {"HTTP_AUTHORIZATION": f"Bearer {scoped_token}"}
    else:
        client, auth = world.scoped, {}
    before = set(AuditEntry.objects.values_list("id", flat=True))
    answer = getattr(client, method.lower())(url, **auth)
    assert not _foreign_leaks(answer.content.decode()), (method, path, answer.content[:300])
    if method != "GET":
        if who == "token":  # tokens only read, and are told so
            assert answer.status_code == 403 and "API tokens only read" in answer.json()["detail"]
            return
        assert answer.status_code == 404, (method, path, answer.status_code)
        new = list(AuditEntry.objects.exclude(id__in=before))
        assert [(e.action, e.ok) for e in new] == [("refused", False)], (method, path)
        return
    assert answer.status_code in (200, 404), (method, path, answer.status_code)
    if "{" in path:
        assert answer.status_code == 404, (method, path)
        if not _known(_api_params(path), {**world.foreign, "letter_id": world.foreign["pk"]}):
            return
        assert world.unscoped.get(url).status_code == 200, path  # found without a scope
        mine = client.get(_api_url(path, world.mine), **auth)
        assert mine.status_code == 200, path
        assert not _foreign_leaks(mine.content.decode()), (path, mine.content[:300])


def test_api_counts_come_from_the_scope_and_metrics_too(world: World, scoped_token: str) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {scoped_token}"}
    for path in ("/taskdeck/api/stats", "/taskdeck/api/series"):
        mine = Client().get(path, **auth).json()
        everyone = world.unscoped.get(path).json()
        finished = [(answer.get("summary") or answer)["finished"] for answer in (mine, everyone)]
        assert finished == [6, 12], (path, finished)  # billing's 5 + 1, then both teams'
    tasks = Client().get("/taskdeck/api/tasks", **auth).json()["items"]
    assert sorted(t["task_id"] for t in tasks) == ["mine-run-1", "mine-run-2"]
    metrics = Client().get("/metrics", REMOTE_ADDR="192.0.2.1", **auth).content.decode()
    assert 'name="billing.charge"' in metrics and 'queue="billing"' in metrics
    assert not _foreign_leaks(metrics), _foreign_leaks(metrics)
    # A token without an owner, and a scraper on an allowed network: everything.
    everything = ApiToken.issue("prometheus")
    full = Client().get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION=f"Bearer {everything}")
    assert _foreign_leaks(full.content.decode()) == list(FOREIGN)
    assert _foreign_leaks(Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode())


def test_a_token_of_an_inactive_owner_admits_no_one(world: World, scoped_token: str) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="billing").update(is_active=False)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {scoped_token}"}
    assert Client().get("/taskdeck/api/tasks", **auth).status_code == 401
    assert Client().get("/metrics", REMOTE_ADDR="192.0.2.1", **auth).status_code == 403


def test_scopes_add_up_over_groups_and_the_user_and_a_superuser_has_none(world: World) -> None:
    from django.contrib.auth import get_user_model

    from taskdeck.policy import scope_for

    billing = get_user_model().objects.get(username="billing")
    AccessScope.objects.create(user=billing, tasks="reports:*")
    scope = scope_for(get_user_model().objects.get(username="billing"))
    assert scope.allows_name("billing.charge") and scope.allows_name("reports:weekly")
    assert scope.allows_queue("billing") and not scope.allows_queue("reports")
    assert not scope.allows_run("foreign.tasks.zz_secret", "zz-foreign-q")
    billing.is_superuser = True
    assert not scope_for(billing).limited
    ops = get_user_model().objects.get(username="ops")
    assert not scope_for(ops).limited  # no row for them or their groups: no limit


@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_billing_user_sees_billing_runs_only_and_a_404_on_another_teams_run(
    page: Any, live_server: Any, login: Any, django_user_model: Any, shoot: Any
) -> None:
    now = timezone.now()
    for i in range(3):
        _run(f"mine-run-{i}", MINE, "billing", now + dt.timedelta(seconds=i))
        _run(f"zz-foreign-run-{i}", "foreign.tasks.zz_secret", "billing", now + dt.timedelta(seconds=i))
    team = Group.objects.create(name="billing-team")
    team.permissions.add(Permission.objects.get(codename="view_dashboard"))
    AccessScope.objects.create(group=team, tasks="billing.*")  # by name: the other team shares the queue
    user = django_user_model.objects.create_user("billing", password=PASSWORD, is_staff=True)
    user.groups.add(team)

    login(page, "billing")
    page.goto(f"{live_server.url}/taskdeck/tasks/")
    rows = page.locator("#rows tr[data-task]")
    rows.first.wait_for()
    shown = sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.task)"))
    assert shown == ["mine-run-0", "mine-run-1", "mine-run-2"]
    assert not _foreign_leaks(page.content())
    page.fill("input[name=q]", "zz-foreign-run-1")  # a search by the other team's id finds nothing
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=zz-foreign-run-1**")
    assert page.locator("#rows tr[data-task]").count() == 0
    shoot(page, "scope-task-list")
    answer = page.goto(f"{live_server.url}/taskdeck/tasks/zz-foreign-run-1/")
    assert answer is not None and answer.status == 404
    assert not _foreign_leaks(page.content())
    answer = page.goto(f"{live_server.url}/taskdeck/tasks/mine-run-1/")
    assert answer is not None and answer.status == 200 and MINE in page.content()


@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_billing_user_sees_the_shared_worker_with_billing_runs_only_live_too(
    page: Any, live_server: Any, login: Any, django_user_model: Any, shoot: Any
) -> None:
    now = timezone.now()
    Worker.objects.create(
        hostname="w1@host",
        online=True,
        last_heartbeat=now,
        pool="prefork",
        concurrency=4,
        active=3,
        processed=41,
    )
    _run("mine-active-0", MINE, "billing", now, state="STARTED", finished_at=None, worker="w1@host")
    for i in range(2):
        _run(f"zz-foreign-active-{i}", "foreign.tasks.zz_secret", "billing", now, state="STARTED",
             finished_at=None, worker="w1@host")  # fmt: skip
    team = Group.objects.create(name="billing-team")
    team.permissions.add(Permission.objects.get(codename="view_dashboard"))
    AccessScope.objects.create(group=team, tasks="billing.*")  # by name: the other team shares the queue
    user = django_user_model.objects.create_user("billing", password=PASSWORD, is_staff=True)
    user.groups.add(team)

    login(page, "billing")
    workers = page.locator("#workers")  # the overview's panel
    assert "1 online · 1 active of 4 processes" in workers.inner_text()
    row = workers.locator("tbody tr", has_text="w1@host")
    assert row.locator("td").nth(2).inner_text() == "1" and row.locator("td").nth(3).inner_text() == "—"
    page.goto(f"{live_server.url}/taskdeck/workers/")
    row = page.locator('tr[data-worker="w1@host"]')
    cells = row.locator("td.num")
    assert cells.all_inner_texts() == ["4", "1", "—"]  # processes, billing's active run, processed not told
    # The row refreshes itself (htmx, every REFRESH seconds) through the same scope.
    _run("mine-active-1", MINE, "billing", now, state="STARTED", finished_at=None, worker="w1@host")
    Worker.objects.filter(hostname="w1@host").update(active=4)
    page.wait_for_function(
        "() => document.querySelectorAll('tr[data-worker=\"w1@host\"] td.num')[1].innerText === '2'"
    )
    assert cells.all_inner_texts() == ["4", "2", "—"]
    shoot(page, "scope-workers")
    assert not _foreign_leaks(page.content())


@pytest.mark.django_db(transaction=True)
def test_in_chromium_the_audit_log_and_a_runs_history_hold_no_other_teams_scope(
    page: Any, live_server: Any, login: Any, django_user_model: Any, shoot: Any
) -> None:
    _run("mine-run-1", MINE, "billing", timezone.now())
    teams = {}
    for name, tasks in (("billing", "billing.*"), ("other", "foreign.tasks.zz_secret*")):
        teams[name] = Group.objects.create(name=f"{name}-team")
        teams[name].permissions.set(Permission.objects.filter(content_type__app_label="taskdeck"))
        AccessScope.objects.create(group=teams[name], tasks=tasks)
        user = django_user_model.objects.create_user(name, password=PASSWORD, is_staff=True)
        user.groups.add(teams[name])
    them = Client()
    them.force_login(django_user_model.objects.get(username="other"))
    assert them.post("/taskdeck/tasks/mine-run-1/revoke/").status_code == 404  # refused, audited

    login(page, "billing")
    page.goto(f"{live_server.url}/taskdeck/audit/")
    page.locator("#audit-table").wait_for()
    assert page.locator("#audit-table tbody tr td.empty").count() == 1  # nothing of theirs, nothing else
    assert not _foreign_leaks(page.content())
    page.goto(f"{live_server.url}/taskdeck/tasks/mine-run-1/")
    assert MINE in page.content() and not _foreign_leaks(page.content())
    shoot(page, "scope-audit")
    assert "zz_secret*" in AuditEntry.objects.get(username="other").message  # what was kept from them


# --- Patterns ------------------------------------------------------------------------------------

PATTERN_TEXT = st.text(alphabet=st.sampled_from("ab.:_-*?"), max_size=8)


@hypothesis_settings(max_examples=300, deadline=None)
@given(pattern=PATTERN_TEXT, name=st.text(alphabet=st.sampled_from("ab.:_-*?[]\n"), max_size=10))
def test_a_pattern_matches_as_fnmatch_does(pattern: str, name: str) -> None:
    if not pattern:
        return
    validate_patterns(pattern)
    assert Scope(tasks=(pattern,)).allows_name(name) == fnmatchcase(name, pattern), (pattern, name)


@hypothesis_settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tasks=st.one_of(st.text(max_size=60), PATTERN_TEXT),
    queues=st.one_of(st.text(max_size=60), st.sampled_from(["billing", "", "bill ing", "[abc]", "a\x00b"])),
)
def test_any_pattern_in_the_admin_is_saved_or_refused_never_a_500(
    world: World, django_user_model: Any, tasks: str, queues: str
) -> None:
    """The admin's form names a bad pattern; a saved one never breaks a page or the API later."""
    AccessScope.objects.all().delete()
    team = Group.objects.get(name="billing-team")
    admin = django_user_model.objects.get_or_create(
        username="root", defaults={"is_staff": True, "is_superuser": True}
    )[0]
    browser = Client(raise_request_exception=False)
    browser.force_login(admin)
    answer = browser.post(
        "/admin/taskdeck/accessscope/add/", {"group": team.pk, "user": "", "tasks": tasks, "queues": queues}
    )
    assert answer.status_code in (200, 302), answer.status_code
    saved = AccessScope.objects.first()
    usable = all(c not in p and p.isprintable() for p in split_patterns(tasks + " " + queues) for c in "[]")
    if answer.status_code == 200:  # the form again, with the error
        assert saved is None
        body = answer.content.decode()
        assert "errornote" in body or "errorlist" in body
    else:
        assert saved is not None and usable, (tasks, queues)
    for path in ("/taskdeck/tasks/", "/taskdeck/api/tasks", "/taskdeck/api/series", "/taskdeck/queues/"):
        reply = Client(raise_request_exception=False)
        reply.force_login(django_user_model.objects.get(username="billing"))
        assert reply.get(path).status_code == 200, (path, tasks, queues)


def test_a_bad_pattern_stored_behind_the_admins_back_grants_nothing(world: World) -> None:
    AccessScope.objects.filter(group__name="billing-team").update(tasks="billing.[ab]*, ok.\x01", queues="")
    answer = world.scoped.get("/taskdeck/api/tasks")
    assert answer.status_code == 200 and answer.json()["items"] == []
