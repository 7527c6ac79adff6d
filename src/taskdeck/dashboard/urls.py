"""The dashboard's URLs, included by ``taskdeck.urls`` at the app's prefix (``/taskdeck/``)."""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from taskdeck.dashboard.access import StaffLoginForm
from taskdeck.dashboard.views import commands, deadletters, fleet, messages, overview, tasks

app_name = "taskdeck"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="taskdeck/login.html",
            authentication_form=StaffLoginForm,
            next_page=reverse_lazy("taskdeck:overview"),
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page=reverse_lazy("taskdeck:login")), name="logout"),
    path("status/", overview.status, name="status"),
    path("tasks/", tasks.task_list, name="tasks"),
    path("tasks/<str:task_id>/", tasks.task_detail, name="task"),
    path("tasks/<str:task_id>/workflow/", tasks.workflow, name="workflow"),
    path("tasks/<str:task_id>/retry/", commands.retry, name="retry"),
    path("tasks/<str:task_id>/revoke/", commands.revoke, name="revoke"),
    path("failures/", tasks.failures, name="failures"),
    path("failures/group/", tasks.failure_group, name="failure-group"),
    path("failures/retry/", commands.retry_group_confirm, name="retry-group-confirm"),
    path("failures/retry/send/", commands.retry_group, name="retry-group"),
    path("queues/", fleet.queues, name="queues"),
    path("queues/<path:name>/purge/", fleet.purge_confirm, name="purge-confirm"),
    path("queues/<path:name>/purge/send/", commands.purge, name="purge"),
    path("queues/<path:queue>/messages/", messages.queue_messages, name="messages"),
    path("queues/<path:queue>/messages/<str:ref>/", messages.message, name="message"),
    path("queues/<path:queue>/messages/<str:ref>/delete/", messages.delete, name="message-delete"),
    path("queues/<path:queue>/messages/<str:ref>/move/", messages.move, name="message-move"),
    path("workers/", fleet.workers, name="workers"),
    path("workers/<str:hostname>/pool/", commands.pool, name="pool"),
    path("workers/<str:hostname>/shutdown/", fleet.shutdown_confirm, name="shutdown-confirm"),
    path("workers/<str:hostname>/shutdown/send/", commands.shutdown, name="shutdown"),
    path("audit/", fleet.audit, name="audit"),
    path("dead-letters/", deadletters.dead_letters, name="dead-letters"),
    path("dead-letters/<int:pk>/", deadletters.dead_letter, name="dead-letter"),
    path("dead-letters/<int:pk>/requeue/", deadletters.requeue, name="dead-letter-requeue"),
    path("dead-letters/<int:pk>/delete/", deadletters.delete, name="dead-letter-delete"),
]
