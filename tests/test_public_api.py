"""``taskdeck`` exports its public API, typed, without importing Django at import time."""

import subprocess
import sys

import taskdeck
from tests.support.services import ROOT


def test_every_exported_name_resolves_to_its_definition():
    for name in taskdeck.__all__:
        value = getattr(taskdeck, name)
        if name != "__version__":
            module = taskdeck._EXPORTS[name]
            assert getattr(sys.modules[module], name) is value


def test_all_lists_exactly_the_exports():
    assert sorted(taskdeck.__all__) == sorted(["__version__", *taskdeck._EXPORTS])


def test_an_unknown_name_is_an_attribute_error():
    try:
        taskdeck.create_celery_ap  # noqa: B018
    except AttributeError as exc:
        assert "create_celery_ap" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_importing_taskdeck_in_a_settings_module_needs_no_django_setup():
    code = (
        "import sys, taskdeck; from taskdeck import lanes_for, TaskRoutes, NOTES_LANES; "
        "assert 'django.db.models' not in sys.modules, 'Django models imported'; print(lanes_for)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_package_is_typed():
    assert (ROOT / "src" / "taskdeck" / "py.typed").exists()
