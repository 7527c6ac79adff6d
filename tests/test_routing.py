"""Routing: every rule of the reference project, checked where the message actually arrived.

The worker test reads the queue each message was delivered on as the worker
saw it (``request.delivery_info["routing_key"]``, recorded by the probe), not
what a router function returns. Precedence inside a table (docs/routing.md)
is tested on ``TaskRoutes`` and ``decide`` directly, with Celery's own router.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from celery import Celery, current_app

from catalog.tasks import resize_image
from maintenance.tasks import purge_expired_sessions, rebuild_search_index
from notifications.tasks import send_email, send_sms
from orders.tasks import charge_payment, confirm_order
from reports.tasks import collect_sales
from taskdeck.lanes import in_lane
from taskdeck.routing import Decision, NamespaceRouter, TaskRoutes, decide
from tests.support.probe import PROBE_ARGS
from tests.support.services import wait_for

ALL_QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]
# Redis priority steps of the lanes (0 is the top on Redis): high, medium, low.
HIGH, MEDIUM, LOW = 0, 3, 6


@pytest.mark.django_db(transaction=True)
def test_each_route_delivers_to_its_queue_as_the_worker_sees_it(start_worker, probe):
    worker = start_worker(ALL_QUEUES, concurrency=2, args=PROBE_ARGS, env=probe.env)
    sent = {
        "exact name": charge_payment.delay(1, 500),
        "glob orders.tasks.*": confirm_order.delay({"order_id": 1, "charged_cents": 500}),
        "glob reports.tasks.*": collect_sales.delay("2024-03-01"),
        "regex maintenance.tasks.": rebuild_search_index.delay(1, seconds=0),
        "regex, another task": purge_expired_sessions.delay(),
        "namespace router (email)": send_email.delay("ops@example.com", "routed"),
        "namespace router (sms)": send_sms.delay("+15550100", "routed"),
        "unmatched": resize_image.delay(1, 640),
        "queue= beats the exact route": charge_payment.apply_async((2, 100), queue="low_priority"),
        "queue= beats the regex route": rebuild_search_index.apply_async((2,), queue="default"),
        "queue= beats the namespace router": send_sms.apply_async(("+15550101", "x"), queue="default"),
        "in_lane high, unrouted task": in_lane(resize_image.s(2, 640), "high").apply_async(),
        "in_lane high beats the regex route": in_lane(rebuild_search_index.s(3, seconds=0), "high").delay(),
        "in_lane low beats the exact route": in_lane(charge_payment.s(3, 100), "low").delay(),
    }
    ids = {case: result.id for case, result in sent.items()}
    wait_for(
        lambda: all(probe.started(task_id) for task_id in ids.values()),
        90,
        f"every routed task to start on {worker.hostname}",
    )
    seen = {case: probe.started(task_id) for case, task_id in ids.items()}

    assert {case: start["routing_key"] for case, start in seen.items()} == {
        "exact name": "high_priority",
        "glob orders.tasks.*": "medium_priority",
        "glob reports.tasks.*": "medium_priority",
        "regex maintenance.tasks.": "low_priority",
        "regex, another task": "low_priority",
        "namespace router (email)": "notifications",
        "namespace router (sms)": "notifications",
        "unmatched": "default",
        "queue= beats the exact route": "low_priority",
        "queue= beats the regex route": "default",
        "queue= beats the namespace router": "default",
        "in_lane high, unrouted task": "high_priority",
        "in_lane high beats the regex route": "high_priority",
        "in_lane low beats the exact route": "low_priority",
    }
    # A lane is a queue and the broker's priority for it, as delivered.
    assert {case: seen[case]["priority"] for case in seen if "in_lane" in case or "glob" in case} == {
        "glob orders.tasks.*": MEDIUM,
        "glob reports.tasks.*": MEDIUM,
        "in_lane high, unrouted task": HIGH,
        "in_lane high beats the regex route": HIGH,
        "in_lane low beats the exact route": LOW,
    }
    assert seen["exact name"]["priority"] == HIGH
    assert seen["regex maintenance.tasks."]["priority"] == LOW
    assert {start["hostname"] for start in seen.values()} == {worker.hostname}
    assert {start["task"] for start in seen.values()} >= {
        "orders.tasks.charge_payment",
        "notifications:send_email",
        "catalog.tasks.resize_image",
    }
    # The tasks ran to the end where they were delivered.
    assert sent["exact name"].get(timeout=60) == {"order_id": 1, "charged_cents": 500, "attempts": 1}
    assert sent["namespace router (sms)"].get(timeout=60) == {"to": "+15550100", "segments": 1}
    assert worker.alive()


# --- Precedence inside a table (docs/routing.md), with Celery's own router ----------------


def test_the_projects_routes_decide_each_queue_and_name_the_rule():
    app = current_app._get_current_object()
    assert [
        decide(app, name)
        for name in (
            "orders.tasks.charge_payment",
            "orders.tasks.confirm_order",
            "reports.tasks.summarize",
            "maintenance.tasks.rebuild_search_index",
            "notifications:send_email",
            "catalog.tasks.resize_image",
        )
    ] == [
        Decision("orders.tasks.charge_payment", "high_priority", "exact 'orders.tasks.charge_payment'"),
        Decision("orders.tasks.confirm_order", "medium_priority", "glob 'orders.tasks.*'"),
        Decision("reports.tasks.summarize", "medium_priority", "glob 'reports.tasks.*'"),
        Decision("maintenance.tasks.rebuild_search_index", "low_priority", r"regex 'maintenance\.tasks\.'"),
        Decision("notifications:send_email", "notifications", "namespace router"),
        Decision("catalog.tasks.resize_image", "default", "default queue"),
    ]


def test_exact_name_beats_a_pattern_listed_before_it():
    routes = TaskRoutes({"orders.tasks.*": "medium_priority", "orders.tasks.charge_payment": "high_priority"})
    match = routes.match("orders.tasks.charge_payment")
    assert (match.kind, match.key, match.route) == (
        "exact",
        "orders.tasks.charge_payment",
        {"queue": "high_priority"},
    )
    assert routes("orders.tasks.charge_payment") == {"queue": "high_priority"}
    assert routes("orders.tasks.confirm_order") == {"queue": "medium_priority"}


def test_among_patterns_the_first_listed_wins():
    broad_first = TaskRoutes({"orders.*": "broad", re.compile(r"orders\.tasks\."): "narrow"})
    narrow_first = TaskRoutes({re.compile(r"orders\.tasks\."): "narrow", "orders.*": "broad"})
    assert broad_first("orders.tasks.confirm_order") == {"queue": "broad"}
    assert broad_first.match("orders.tasks.confirm_order").describe() == "glob 'orders.*'"
    assert narrow_first("orders.tasks.confirm_order") == {"queue": "narrow"}
    assert narrow_first.match("orders.tasks.confirm_order").describe() == r"regex 'orders\.tasks\.'"


def test_glob_star_spans_dots_and_a_key_without_star_is_exact():
    routes = TaskRoutes({"reports.*": "medium_priority", "orders.tasks.charge_payment": "high_priority"})
    assert routes("reports.tasks.summarize") == {"queue": "medium_priority"}
    assert routes("orders.tasks.charge_payment_v2") is None
    assert routes("orders.tasks.charge") is None


def test_glob_is_anchored_at_both_ends_unlike_a_regex():
    """Celery compiles a glob with fnmatch.translate: the whole name must match."""
    routes = TaskRoutes({"*.summarize": "medium_priority"})
    assert routes("reports.tasks.summarize") == {"queue": "medium_priority"}
    assert routes("reports.tasks.summarize_v2") is None
    assert TaskRoutes({"orders.*": "medium_priority"})("legacy.orders.tasks.a") is None


def test_regex_is_anchored_at_the_start_only():
    routes = TaskRoutes({re.compile(r"maintenance\.tasks\."): "low_priority"})
    assert routes("maintenance.tasks.rebuild_search_index") == {"queue": "low_priority"}
    assert routes("maintenance.tasks.anything.deeper") == {"queue": "low_priority"}
    assert routes("legacy.maintenance.tasks.rebuild") is None


def test_a_lane_route_expands_to_the_lane_queue_and_the_brokers_priority():
    routes = TaskRoutes({"orders.tasks.charge_payment": {"lane": "high"}, "x.*": {"lane": "low"}})
    # Celery passes the task, whose app's broker decides the number.
    on_rabbitmq = SimpleNamespace(app=_app_with_routes(None, "amqp://guest:guest@127.0.0.1:5672//"))
    on_redis = SimpleNamespace(app=_app_with_routes(None))
    # RabbitMQ: a higher number is a higher priority; Redis: 0 is the top.
    assert routes("orders.tasks.charge_payment", task=on_rabbitmq) == {
        "queue": "high_priority",
        "priority": 9,
    }
    assert routes("x.y", task=on_rabbitmq) == {"queue": "low_priority", "priority": 3}
    assert routes("orders.tasks.charge_payment", task=on_redis) == {
        "queue": "high_priority",
        "priority": HIGH,
    }
    assert routes("x.y", task=on_redis) == {"queue": "low_priority", "priority": LOW}


class NotesTaskRouter:
    """The notes' dynamic router: answers for every name, the default queue included."""

    def route_for_task(self, task, *args, **kwargs):
        if ":" not in task:
            return {"queue": "default"}
        namespace, _ = task.split(":")
        return {"queue": namespace}


def _app_with_routes(routes, broker="redis://127.0.0.1:6379/0"):
    app = Celery("routing-test", broker=broker, set_as_current=False)
    app.conf.task_default_queue = "default"
    app.conf.task_routes = routes
    return app


def test_namespace_router_lets_the_table_after_it_answer():
    table = TaskRoutes({"orders.tasks.charge_payment": "high_priority"})
    app = _app_with_routes((NamespaceRouter(), table))
    assert decide(app, "orders.tasks.charge_payment").queue == "high_priority"
    assert decide(app, "notifications:send_sms").queue == "notifications"
    assert decide(app, "catalog.tasks.resize_image") == Decision(
        "catalog.tasks.resize_image", "default", "default queue"
    )


def test_the_notes_router_hides_every_route_after_it():
    """The bug docs/routing.md describes, shown with Celery's real router."""
    table = TaskRoutes({"orders.tasks.charge_payment": "high_priority"})
    app = _app_with_routes((NotesTaskRouter(), table))
    assert decide(app, "orders.tasks.charge_payment") == Decision(
        "orders.tasks.charge_payment", "default", "router NotesTaskRouter"
    )


def test_namespace_router_answers_only_for_namespaced_names():
    router = NamespaceRouter()
    assert router.route_for_task("notifications:send_email") == {"queue": "notifications"}
    assert router.route_for_task("a:b:c") == {"queue": "a"}  # the notes' split(":") raises here
    assert router.route_for_task("orders.tasks.charge_payment") is None
    assert router.route_for_task(":send_email") is None
    assert router.route_for_task("notifications:") is None
