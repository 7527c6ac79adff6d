"""Notifications: ``namespace:task`` names, routed by NamespaceRouter.

The queue is the part before the colon: both tasks go to ``notifications``.
"""

from celery import shared_task


@shared_task(name="notifications:send_email")
def send_email(to: str, subject: str, body: str = "") -> dict:
    from django.core.mail import send_mail

    sent = send_mail(subject, body, "noreply@example.com", [to])
    return {"to": to, "subject": subject, "sent": sent}


@shared_task(name="notifications:send_sms")
def send_sms(number: str, text: str) -> dict:
    if not number.startswith("+"):
        raise ValueError(f"phone number must be in E.164 form (+...), got {number!r}")
    return {"to": number, "segments": (len(text) + 159) // 160}


@shared_task(name="notifications:welcome_user")
def welcome_user(username: str) -> dict:
    """Welcome a new user by email.

    Sent right after the account is created: when the task runs before the
    transaction that creates the user has committed, it fails with
    ``User.DoesNotExist``. Retried later (from the dashboard), it finds the
    user and succeeds: the classic case ``transaction.on_commit`` prevents.
    """
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    return send_email(user.email or f"{username}@example.com", "Welcome", f"Hello {username}!")
