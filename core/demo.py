"""The demo workload of ``taskdeck demo``: every route, lane and canvas primitive.

``TASKDECK["DEMO"]`` points here. Each job names what it shows; the demo
prints where each of its tasks went and how it ended.
"""

from celery import states
from celery.result import AsyncResult

from catalog.tasks import build_gallery, import_feed, resize_all
from maintenance.tasks import rebuild_search_index
from notifications.tasks import send_email, send_sms
from orders.tasks import charge_payment, confirm_order, send_receipt
from reports.tasks import daily_report
from taskdeck.demo import Job
from taskdeck.lanes import in_lane


def workload() -> list[Job]:
    return [
        Job(
            "payment: exact route to the high lane; the gateway fails twice, retried with backoff",
            lambda: charge_payment.delay(1001, 4999, gateway_failures=2),
        ),
        Job(
            "payment then confirmation: a chain across the high and medium lanes",
            lambda: (charge_payment.s(1002, 1250) | confirm_order.s()).delay(),
        ),
        Job(
            "daily report: a chain of three on the medium lane (glob route)",
            lambda: daily_report("2026-11-24").delay(),
        ),
        Job(
            "gallery: a chord of four resizes and one callback, on the default queue",
            lambda: build_gallery(7, [1, 2, 3, 4], width=800).delay(),
        ),
        Job(
            "thumbnails: a group of three on the default queue", lambda: resize_all([11, 12, 13], 160).delay()
        ),
        Job(
            "welcome email: namespace router to the notifications queue",
            lambda: send_email.delay("ada@example.com", "Welcome", "Your account is ready."),
        ),
        Job(
            "receipt: a Django task (django.tasks) at priority 50, on the medium lane by the glob route",
            lambda: AsyncResult(send_receipt.enqueue(1003, "ada@example.com").id),
        ),
        Job("search index: regex route to the low lane", lambda: rebuild_search_index.delay(3)),
        Job(
            "urgent reindex: the same task put in the high lane at call time",
            lambda: in_lane(rebuild_search_index.s(4), "high").delay(),
        ),
        Job(
            "feed import with an ftp:// URL: fails at once, no retry",
            lambda: import_feed.delay("ftp://feeds.example.com/catalog.xml"),
            expect=states.FAILURE,
        ),
        Job(
            "SMS to a number not in E.164 form: fails",
            lambda: send_sms.delay("555-0100", "Your parcel is on its way"),
            expect=states.FAILURE,
        ),
    ]
