"""Orders: the high lane (exact route) and a flaky call retried with backoff.

Routes (core/settings.py): ``orders.tasks.charge_payment`` by exact name to
the high lane; every other ``orders.tasks.*`` by glob to the medium lane.

``send_receipt`` is a task of Django's own Tasks framework (``django.tasks``),
run by the same workers through ``taskdeck.tasks.CeleryBackend``: the glob
route sends it to the medium lane's queue too.
"""

from celery import shared_task

try:
    from django.tasks import task  # Django 6.0+
except ImportError:  # Django 5.2: the backport (taskdeck[tasks])
    from django_tasks import task


class PaymentGatewayError(Exception):
    """The payment provider did not answer; worth retrying."""


@shared_task(
    bind=True,
    autoretry_for=(PaymentGatewayError,),
    retry_backoff=1,  # 1 s, 2 s, 4 s ... between attempts
    retry_backoff_max=30,
    retry_jitter=True,  # spread retries so a recovering gateway is not stampeded
    max_retries=5,
)
def charge_payment(self, order_id: int, amount_cents: int, gateway_failures: int = 0) -> dict:
    """Charge an order. The gateway fails the first ``gateway_failures`` attempts."""
    if self.request.retries < gateway_failures:
        raise PaymentGatewayError(
            f"gateway timeout charging order {order_id} (attempt {self.request.retries + 1})"
        )
    return {
        "order_id": order_id,
        "charged_cents": amount_cents,
        "attempts": self.request.retries + 1,
    }


@shared_task
def confirm_order(payment: dict) -> str:
    """Confirm an order once its payment went through (chained after charge_payment)."""
    return f"order {payment['order_id']} confirmed, {payment['charged_cents']} cents charged"


@task(priority=50, takes_context=True)
def send_receipt(context, order_id: int, email: str) -> dict:
    """Email an order's receipt; a Django task (``send_receipt.enqueue(order_id, email)``)."""
    return {
        "order_id": order_id,
        "to": email,
        "result_id": context.task_result.id,
        "attempt": context.attempt,
    }
