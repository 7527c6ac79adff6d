"""taskdeck's system checks: each id fires on its misconfiguration and names what to fix.

The reference project's own settings pass clean, so each message below is
caused by the one setting the test overrides. (There is no ``taskdeck.E005``:
docs/configuration.md lists the ids in use.)
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.core.checks import Error, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_hypothesis
from hypothesis import strategies as st

from taskdeck import conf
from taskdeck.checks import check_settings
from taskdeck.routing import TaskRoutes

ROUTES = settings.CELERY_TASK_ROUTES
WORKERS = settings.TASKDECK["WORKERS"]


def taskdeck(**changes):
    """override_settings for the project's TASKDECK dict with some keys changed."""
    return override_settings(TASKDECK={**settings.TASKDECK, **changes})


def messages(check_id: str) -> list:
    found = [m for m in check_settings() if m.id == check_id]
    for message in found:
        assert message.hint, f"{check_id} has no hint"
    return found


def only(check_id: str):
    """The one message of ``check_id``; no other taskdeck message fires."""
    everything = check_settings()
    assert [m.id for m in everything] == [check_id], [str(m) for m in everything]
    (message,) = everything
    assert message.hint
    return message


def test_the_reference_project_passes_every_check():
    assert check_settings() == []
    assert [m for m in run_checks() if m.id and m.id.startswith("taskdeck.")] == []
    call_command("check", fail_level="WARNING")  # raises SystemCheckError on any message


def test_manage_py_check_fails_on_a_taskdeck_error():
    with override_settings(CELERY_TASK_DEFAULT_QUEUE="celery"), pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert "(taskdeck.E004) CELERY_TASK_DEFAULT_QUEUE is 'celery'" in str(raised.value)


# --- errors -------------------------------------------------------------------------------


def test_e001_router_path_that_cannot_be_imported():
    with override_settings(CELERY_TASK_ROUTES=("billing.routers.Nowhere", *ROUTES[1:])):
        message = only("taskdeck.E001")
    assert isinstance(message, Error)
    assert message.msg.startswith("CELERY_TASK_ROUTES[0] = 'billing.routers.Nowhere' cannot be imported")


def test_e001_route_entry_of_the_wrong_type():
    with override_settings(CELERY_TASK_ROUTES=(*ROUTES, 42)):
        message = only("taskdeck.E001")
    assert message.msg.startswith("CELERY_TASK_ROUTES[2] is a int;")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"lane": "urgent"}, "unknown lane 'urgent'; TASKDECK['LANES'] defines high, medium, low."),
        ("", "the queue name is empty."),
        (7, "7 is not a queue name or a dict of options."),
    ],
)
def test_e002_route_value_that_is_no_queue(value, problem):
    routes = (ROUTES[0], TaskRoutes({**ROUTES[1].table, "orders.tasks.refund": value}))
    with override_settings(CELERY_TASK_ROUTES=routes):
        message = only("taskdeck.E002")
    assert isinstance(message, Error)
    assert message.msg == f"CELERY_TASK_ROUTES[1]['orders.tasks.refund']: {problem}"


def test_e002_in_a_plain_mapping_and_a_regex_key():
    with override_settings(CELERY_TASK_ROUTES=({re.compile(r"billing\."): {"lane": "top"}}, *ROUTES)):
        message = only("taskdeck.E002")
    assert message.msg.startswith(r"CELERY_TASK_ROUTES[0][billing\.]: unknown lane 'top'")


@pytest.mark.parametrize("lanes", [["high", "low"], "high", {}, {"high": ""}, {"high": 3}])
def test_e003_lanes_that_do_not_map_names_to_queues(lanes):
    # With the project's routes, which name lanes: reported, not a crash of the check.
    with taskdeck(LANES=lanes):
        (message,) = messages("taskdeck.E003")
    assert isinstance(message, Error)
    assert message.msg == f"TASKDECK['LANES'] must map lane names to queue names, got {lanes!r}."


def test_e004_default_queue_named_twice_differently():
    with override_settings(CELERY_TASK_DEFAULT_QUEUE="celery"):
        message = only("taskdeck.E004")
    assert isinstance(message, Error)
    assert message.msg == "CELERY_TASK_DEFAULT_QUEUE is 'celery' but TASKDECK['DEFAULT_QUEUE'] is 'default'."


def test_e006_worker_group_with_unknown_keys():
    workers = {**WORKERS, "lanes": {**WORKERS["lanes"], "concurency": 4, "hostname": "x"}}
    with taskdeck(WORKERS=workers):
        message = only("taskdeck.E006")
    assert message.msg == "TASKDECK['WORKERS']['lanes'] has unknown keys: concurency, hostname."


def test_e006_worker_group_without_queues():
    workers = {**WORKERS, "spare": {"concurrency": 1}}
    with taskdeck(WORKERS=workers):
        message = only("taskdeck.E006")
    assert (
        message.msg
        == "TASKDECK['WORKERS']['spare']['queues'] must be a non-empty list of queue names, got []: "
        "no worker starts for it."
    )


@pytest.mark.parametrize(
    ("group", "wrong"),
    [
        ({"queues": "default"}, "['queues'] must be a non-empty list of queue names, got 'default'"),
        ({"queues": ["a,b"]}, "['queues'] must be a non-empty list of queue names, got ['a,b']"),
        (
            {"queues": ["x"], "concurrency": "two"},
            "['concurrency'] must be an integer of at least 1, got 'two'",
        ),
        ({"queues": ["x"], "concurrency": 0}, "['concurrency'] must be an integer of at least 1, got 0"),
        (
            {"queues": ["x"], "prefetch_multiplier": True},
            "['prefetch_multiplier'] must be an integer of at least 0",
        ),
        (
            {"queues": ["x"], "pool": "fork"},
            "['pool'] must be one of Celery's pools (custom, eventlet, gevent, prefork, processes, solo, "
            "threads), got 'fork'",
        ),
        ("main", " must be a dict, got 'main': no worker starts for it."),
    ],
)
def test_e006_worker_group_values_of_the_wrong_type(group, wrong):
    with taskdeck(WORKERS={**WORKERS, "spare": group}):
        message = only("taskdeck.E006")
        assert message.msg.startswith("TASKDECK['WORKERS']['spare']") and wrong in message.msg
        # What `up` starts leaves the group out instead of failing on it.
        from taskdeck import conf

        assert set(conf.get()["WORKERS"]) == set(WORKERS)


def test_e006_workers_not_a_dict():
    with taskdeck(WORKERS="main"):
        message = only("taskdeck.E006")
    assert message.msg == "TASKDECK['WORKERS'] must be a dict of worker groups, got 'main'."


# --- warnings -----------------------------------------------------------------------------


def test_w001_route_to_a_queue_no_worker_consumes():
    routes = (ROUTES[0], TaskRoutes({**ROUTES[1].table, "billing.tasks.*": "billing"}))
    with override_settings(CELERY_TASK_ROUTES=routes):
        message = only("taskdeck.W001")
    assert isinstance(message, Warning)
    assert message.msg == (
        "CELERY_TASK_ROUTES[1]['billing.tasks.*'] routes to queue 'billing', which no worker group in "
        "TASKDECK['WORKERS'] consumes: its tasks would wait forever."
    )


def test_w001_lane_whose_queue_no_worker_consumes():
    workers = {**WORKERS, "lanes": {**WORKERS["lanes"], "queues": ["high_priority", "medium_priority"]}}
    with taskdeck(WORKERS=workers):
        (message,) = messages("taskdeck.W001")
    assert message.msg.startswith(
        "CELERY_TASK_ROUTES[1][maintenance\\.tasks\\.] routes to queue 'low_priority', which no worker group"
    )


def test_w002_namespace_whose_queue_no_worker_consumes():
    workers = {name: group for name, group in WORKERS.items() if name != "notifications"}
    with taskdeck(WORKERS=workers):
        found = messages("taskdeck.W002")
    # Every task of the notifications app, and nothing else.
    assert sorted(m.msg for m in found) == [
        f"task 'notifications:{name}' is routed by NamespaceRouter to queue 'notifications', which no "
        "worker group in TASKDECK['WORKERS'] consumes."
        for name in ("send_email", "send_sms", "welcome_user")
    ]
    assert {type(m) for m in found} == {Warning}


def test_w003_default_queue_no_worker_consumes():
    workers = {name: group for name, group in WORKERS.items() if name != "default"}
    with taskdeck(WORKERS=workers):
        message = only("taskdeck.W003")
    assert message.msg == (
        "the default queue 'default' is consumed by no worker group in TASKDECK['WORKERS']: every task "
        "without a route would wait forever."
    )


def test_no_worker_groups_means_nothing_to_compare():
    with taskdeck(WORKERS={}):
        assert check_settings() == []


def test_w004_pickle_accepted():
    with override_settings(CELERY_ACCEPT_CONTENT=["application/json", "pickle"]):
        message = only("taskdeck.W004")
    assert isinstance(message, Warning)
    assert message.msg.startswith(
        "CELERY_ACCEPT_CONTENT = ['application/json', 'pickle'] lets workers unpickle"
    )
    assert message.hint == "Set CELERY_ACCEPT_CONTENT = ['application/json']."


def test_w005_old_style_queues_setting():
    with override_settings(CELERY_QUEUES=settings.CELERY_TASK_QUEUES):
        message = only("taskdeck.W005")
    assert message.msg.startswith("CELERY_QUEUES is an old-style name that Celery ignores")
    assert message.hint == "Rename it to CELERY_TASK_QUEUES."


# --- what is installed (taskdeck.install_checks) ----------------------------------------


def test_e020_postgresql_through_psycopg2(monkeypatch):
    from taskdeck import install_checks

    assert settings.DATABASES["default"]["ENGINE"].endswith(".postgresql")
    assert install_checks.check_install() == []  # psycopg 3 here
    monkeypatch.setattr(install_checks, "_postgres_driver", lambda: "psycopg2")
    (message,) = [m for m in run_checks() if m.id == "taskdeck.E020"]
    assert isinstance(message, Error)
    assert "'default'" in message.msg and "psycopg2" in message.msg
    assert "taskdeck[postgres]" in message.hint
    with pytest.raises(SystemCheckError, match=r"taskdeck\.E020"):
        call_command("check")


def test_e020_not_raised_without_postgresql(monkeypatch):
    from taskdeck import install_checks

    monkeypatch.setattr(install_checks, "_postgres_driver", lambda: "psycopg2")
    sqlite = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    assert install_checks._check_postgres_driver(sqlite) == []


def test_w020_a_hooked_internal_that_changed(monkeypatch):
    from taskdeck import compat, install_checks

    monkeypatch.setitem(compat.HOOKED_INTERNALS, "celery.app.amqp.AMQP._create_task_sender", "(self, x)")
    (message,) = install_checks._check_hooked_internals()
    assert message.id == "taskdeck.W020"
    assert "celery.app.amqp.AMQP._create_task_sender: signature is (self)" in message.msg
    assert message.hint


# --- settings an adopting project may get wrong (taskdeck.settings_checks) ------------------


def fresh_app():
    """A Celery app made by create_celery_app (not made the current app).

    Its configuration reads Django's settings when asked: call it and read it
    under the same override_settings.
    """
    from taskdeck.app import create_celery_app

    return create_celery_app("adopting", set_as_current=False)


@pytest.mark.parametrize(
    ("setting", "check_id"),
    [
        ("CELERY_WORKER_SEND_TASK_EVENTS", "taskdeck.W021"),
        ("CELERY_TASK_SEND_SENT_EVENT", "taskdeck.W022"),
        ("CELERY_RESULT_EXTENDED", "taskdeck.W023"),
    ],
)
def test_w021_w023_a_setting_that_blinds_monitoring_is_named(setting, check_id):
    from taskdeck.settings_checks import check_monitoring

    # The direct backend: with the record one (the default on Redis) task events are meant to be off.
    direct = {"CELERY_RESULT_BACKEND": "taskdeck.results.backend:DatabaseBackend"}
    with override_settings(**{**direct, "CELERY_WORKER_SEND_TASK_EVENTS": True, setting: False}):
        (message,) = check_monitoring(fresh_app().conf)
    assert isinstance(message, Warning) and message.id == check_id
    assert message.msg.startswith(f"{setting} is False: ")
    assert f"Remove {setting}" in message.hint


def record_backend_subclass():
    """A project's own backend built on the record one."""
    from taskdeck.results.record import RecordBackend

    return type("ProjectRecordBackend", (RecordBackend,), {})


@pytest.mark.parametrize(
    "backend",
    [
        "taskdeck.results.record:RecordBackend",
        "taskdeck.results.record.RecordBackend",
        "tests.test_checks:ProjectRecordBackend",
        "class",
    ],
)
def test_w021_not_for_the_record_backend_whose_records_carry_the_facts(backend, monkeypatch):
    from taskdeck.settings_checks import check_monitoring

    subclass = record_backend_subclass()
    monkeypatch.setitem(globals(), "ProjectRecordBackend", subclass)
    value = subclass if backend == "class" else backend
    with override_settings(CELERY_WORKER_SEND_TASK_EVENTS=False, CELERY_RESULT_BACKEND=value):
        conf_ = fresh_app().conf
        assert conf_.result_backend == value and conf_.worker_send_task_events is False
        assert check_monitoring(conf_) == []
        # Producers' task-sent events are still needed with records: W022 is not silenced.
        with override_settings(CELERY_TASK_SEND_SENT_EVENT=False):
            assert [m.id for m in check_monitoring(fresh_app().conf)] == ["taskdeck.W022"]


@pytest.mark.parametrize(
    "backend",
    [
        "taskdeck.results.backend:DatabaseBackend",
        "taskdeck.results.writebehind:WriteBehindBackend",
        "django-db",
        "redis://127.0.0.1:6379/0",
        "taskdeck.results.record:NoSuchBackend",
        "no.such.module:RecordBackend",
    ],
)
def test_w021_still_warns_with_events_off_and_another_backend(backend):
    from taskdeck.settings_checks import check_monitoring

    with override_settings(CELERY_WORKER_SEND_TASK_EVENTS=False, CELERY_RESULT_BACKEND=backend):
        (message,) = check_monitoring(fresh_app().conf)
    assert message.id == "taskdeck.W021"


def test_the_preset_turns_monitoring_on_where_settings_say_nothing():
    from taskdeck.settings_checks import check_monitoring

    names = [
        "CELERY_WORKER_SEND_TASK_EVENTS",
        "CELERY_TASK_SEND_SENT_EVENT",
        "CELERY_RESULT_EXTENDED",
        "CELERY_RESULT_BACKEND",
    ]
    with override_settings():
        for name in names:
            delattr(settings, name)
        app = fresh_app()
        assert not any(hasattr(settings, name) for name in names)
        assert check_monitoring(app.conf) == []
        # On a Redis broker: one record per run, which carries what task events would.
        assert app.conf.result_backend == "taskdeck.results.record:RecordBackend"
        assert not app.conf.worker_send_task_events
        assert app.conf.task_send_sent_event and app.conf.result_extended


def test_plain_celery_defaults_fire_all_three():
    from celery import Celery

    from taskdeck.settings_checks import check_monitoring

    assert [m.id for m in check_monitoring(Celery("plain", set_as_current=False).conf)] == [
        "taskdeck.W021",
        "taskdeck.W022",
        "taskdeck.W023",
    ]


def adoption_messages(check_id: str) -> list:
    from taskdeck.settings_checks import check_adoption

    found = [m for m in check_adoption() if m.id == check_id]
    assert all(m.hint for m in found), f"{check_id} has no hint"
    return found


def test_e021_unknown_keys_in_taskdeck_and_its_dicts_with_a_suggestion():
    with taskdeck(
        WORKER="x",
        MONITOR={"TOKENS": [], "BATCHSIZE": 10},
        RESULTS={"TTL": 5, "tll": 1},
        DASHBOARD={"REFRESH": 1},
    ):
        found = adoption_messages("taskdeck.E021")
    assert [m.msg for m in found] == [
        "TASKDECK has an unknown key 'WORKER': taskdeck ignores it, so its default applies.",
        "TASKDECK['MONITOR'] has an unknown key 'BATCHSIZE': taskdeck ignores it, so its default applies.",
        "TASKDECK['RESULTS'] has an unknown key 'tll': taskdeck ignores it, so its default applies.",
    ]
    assert found[0].hint.startswith("Did you mean 'WORKERS'?")
    assert found[1].hint.startswith("Did you mean 'BATCH_SIZE'?")


def test_e021_a_nested_setting_that_is_not_a_dict():
    with taskdeck(MONITOR=["TOKENS"]):
        (message,) = adoption_messages("taskdeck.E021")
    assert message.msg == "TASKDECK['MONITOR'] must be a dict, got list."


def test_e022_results_table_app_missing():
    apps = [a for a in settings.INSTALLED_APPS if a != "django_celery_results"]
    from taskdeck.settings_checks import _check_apps

    with override_settings(INSTALLED_APPS=apps):
        (message,) = _check_apps({"result_backend": "taskdeck.results.backend:DatabaseBackend"})
    assert message.id == "taskdeck.E022" and "'django_celery_results'" in message.hint


def test_e023_beat_scheduler_not_installed():
    from taskdeck.settings_checks import _check_apps

    (message,) = _check_apps({"beat_scheduler": "django_celery_beat_missing.schedulers:DatabaseScheduler"})
    assert message.id == "taskdeck.E023" and "taskdeck[beat]" in message.hint


@pytest.mark.django_db
def test_e024_tokens_given_as_a_string_admit_no_one(client):
    """A string instead of a list was iterated into its characters: each one a valid token."""
    monitor = {**settings.TASKDECK.get("MONITOR", {}), "TOKENS": "s3cret-token"}
    with taskdeck(MONITOR=monitor):
        (message,) = adoption_messages("taskdeck.E024")
        statuses = {
            token: client.get("/taskdeck/api/tasks", HTTP_AUTHORIZATION=f"Bearer {token}").status_code
            for token in ("s", "3", "-", "s3cret-token")
        }
    assert message.msg.startswith("TASKDECK['MONITOR']['TOKENS'] must be a list of non-empty strings")
    assert statuses == {"s": 401, "3": 401, "-": 401, "s3cret-token": 401}
    with taskdeck(MONITOR={**monitor, "TOKENS": ["s3cret-token"]}):
        assert adoption_messages("taskdeck.E024") == []
        assert client.get("/taskdeck/api/tasks", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


@pytest.mark.django_db
def test_e025_metrics_networks_that_are_not_networks_admit_no_one(client):
    monitor = {**settings.TASKDECK.get("MONITOR", {}), "METRICS_NETWORKS": ["not-a-network", "127.0.0.1/32"]}
    with taskdeck(MONITOR=monitor):
        (message,) = adoption_messages("taskdeck.E025")
        metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code
    assert "'not-a-network'" in message.msg and "METRICS_NETWORKS" in message.msg
    assert metrics == 200  # the good entry still admits loopback; the bad one no longer gives a 500


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"WEB_WORKERS": "two"},
            "TASKDECK['WEB_WORKERS'] must be a whole number from 1 to 1,000,000,000,000,000, got 'two' (str)",
        ),
        ({"BEAT": "yes"}, "TASKDECK['BEAT'] must be True or False, got 'yes' (str)"),
        (
            {"MAX_MESSAGE_BYTES": -1},
            "TASKDECK['MAX_MESSAGE_BYTES'] must be a whole number from 0 to 1,000,000,000,000,000 or None",
        ),
        ({"MONITOR": {"BATCH_SIZE": 10.5}}, "TASKDECK['MONITOR']['BATCH_SIZE'] must be a whole number"),
        ({"MONITOR": {"ALERTS": {"name": "x"}}}, "TASKDECK['MONITOR']['ALERTS'] must be a list, got"),
        (
            {"RESULTS": {"TTL": "1h"}},
            "TASKDECK['RESULTS']['TTL'] must be a whole number from 0 to 1,000,000,000,000,000, got '1h'",
        ),
        (
            {"DASHBOARD": {"REFRESH": None}},
            "TASKDECK['DASHBOARD']['REFRESH'] must be a number of seconds from 0 to 1,000,000,000, got None",
        ),
        # Values that passed and then broke the recorder (an attack pass): inf stopped it at start,
        # BATCH_SIZE 0 read no record ever, a bucket that is not a number dead-lettered every run.
        (
            {"MONITOR": {"FLUSH_INTERVAL": float("inf")}},
            "TASKDECK['MONITOR']['FLUSH_INTERVAL'] must be a number of seconds from 0 to 1,000,000,000, "
            "got inf",
        ),
        (
            {"MONITOR": {"RUN_RETENTION": 10**30}},
            "TASKDECK['MONITOR']['RUN_RETENTION'] must be a number of seconds from 0 to 1,000,000,000 "
            "or None",
        ),
        (
            {"MONITOR": {"BATCH_SIZE": 0}},
            "TASKDECK['MONITOR']['BATCH_SIZE'] must be a whole number from 1 to",
        ),
        (
            {"MONITOR": {"METRICS_BUCKETS": ["a", None]}},
            "TASKDECK['MONITOR']['METRICS_BUCKETS'] must be a list of numbers from 0 to 1,000,000,000, got",
        ),
    ],
)
def test_e026_a_value_of_the_wrong_type(changes, expected):
    nested = {
        key: {**settings.TASKDECK.get(key, {}), **value}
        for key, value in changes.items()
        if isinstance(value, dict)
    }
    with taskdeck(**{**changes, **nested}):
        (message,) = adoption_messages("taskdeck.E026")
    assert message.msg.startswith(expected), message.msg


def test_e026_lost_and_stuck_thresholds_are_seconds_and_stuck_after_may_be_none():
    monitor = settings.TASKDECK.get("MONITOR", {})
    with taskdeck(MONITOR={**monitor, "STUCK_AFTER": "5m", "LIVENESS_INTERVAL": None}):
        found = sorted(m.msg.split(" must")[0] for m in adoption_messages("taskdeck.E026"))
        assert conf.monitor()["STUCK_AFTER"] == conf.MONITOR_DEFAULTS["STUCK_AFTER"]  # the default applies
    assert found == ["TASKDECK['MONITOR']['LIVENESS_INTERVAL']", "TASKDECK['MONITOR']['STUCK_AFTER']"]
    with taskdeck(MONITOR={**monitor, "STUCK_AFTER": None, "STUCK_NO_CONSUMER_AFTER": 2.5}):
        assert adoption_messages("taskdeck.E026") == []
        assert conf.monitor()["STUCK_AFTER"] is None


def test_e026_accepts_what_the_defaults_allow():
    with taskdeck(
        MAX_MESSAGE_BYTES=None,
        MONITOR={**settings.TASKDECK.get("MONITOR", {}), "SAMPLE_INTERVAL": 2.5, "RUN_RETENTION": None},
        DASHBOARD={"REFRESH": 2},
    ):
        assert adoption_messages("taskdeck.E026") == []


def test_taskdeck_not_a_dict_is_named_and_the_defaults_apply():
    from taskdeck import conf

    with override_settings(TASKDECK="oops"):
        assert conf.get()["DEFAULT_QUEUE"] == "default"
        ids = {m.id for m in run_checks() if m.id and m.id.startswith("taskdeck.")}
    assert "taskdeck.E021" in ids


SETTING_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.text(max_size=5), st.integers(), st.none()), max_size=3
    ),
)


@settings_hypothesis(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_settings_value_breaks_the_checks_or_the_settings_reader(data):
    """Any value at any key of TASKDECK, of its dicts or of a worker group: named by a check, never raised."""
    from taskdeck import conf
    from taskdeck.settings_checks import NESTED

    keys = st.sampled_from([*conf.DEFAULTS, "UNKNOWN"])
    user = data.draw(st.dictionaries(keys, SETTING_VALUES, max_size=4))
    for key, defaults in NESTED.items():
        if data.draw(st.booleans()):
            user[key] = data.draw(
                st.dictionaries(st.sampled_from([*defaults, "X"]), SETTING_VALUES, max_size=4)
            )
    if data.draw(st.booleans()):
        user["WORKERS"] = {
            "g": data.draw(st.dictionaries(st.sampled_from([*conf.WORKER_DEFAULTS, "x"]), SETTING_VALUES))
        }
    with override_settings(TASKDECK=user):
        conf.get()
        for message in run_checks():
            assert message.msg


def test_the_data_folder_comes_from_the_environment_when_the_settings_name_none(monkeypatch, tmp_path):
    """An adopted project's settings name none: TASKDECK_DATA_DIR moves it, as in the reference project."""
    from pathlib import Path

    from taskdeck import conf

    monkeypatch.setenv("TASKDECK_DATA_DIR", str(tmp_path / "data"))
    with override_settings(TASKDECK={}):
        assert conf.get()["DATA_DIR"] == tmp_path / "data"
    monkeypatch.delenv("TASKDECK_DATA_DIR")
    with override_settings(TASKDECK={}):
        assert conf.get()["DATA_DIR"] == Path(settings.BASE_DIR) / ".taskdeck"
