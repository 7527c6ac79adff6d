"""The Celery and kombu internals taskdeck hooks are still there, shaped as taskdeck expects.

pyproject.toml caps Celery and kombu below their next minor; this is what
makes raising a cap safe: each hooked internal (taskdeck/compat.py) is
resolved on the installed releases and its signature compared.
"""

import ast
import importlib
from pathlib import Path

import celery
import kombu
import pytest

from taskdeck import compat

SOURCE = Path(compat.__file__).parent
HOOKED_PACKAGES = ("celery", "kombu", "django_celery_results")


@pytest.mark.parametrize("path", sorted(compat.HOOKED_INTERNALS))
def test_each_hooked_internal_is_there_with_its_signature(path):
    expected = compat.HOOKED_INTERNALS[path]
    try:
        found = compat.resolve(path)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{path} is gone in celery {celery.__version__} / kombu {kombu.__version__}: {exc}")
    if expected is not None:
        assert compat.signature(found) == expected, (
            f"{path} changed in celery {celery.__version__} / kombu {kombu.__version__}: "
            "check taskdeck's hook, then update taskdeck/compat.py"
        )


@pytest.mark.parametrize("path", sorted(compat.INSTANCE_ATTRIBUTES))
def test_instance_attributes_taskdeck_reads_are_set(path):
    module, _, name = path.rpartition(".")
    instance = getattr(importlib.import_module(module), name)(celery.current_app)
    for attribute in compat.INSTANCE_ATTRIBUTES[path]:
        assert hasattr(instance, attribute), f"{path} instances have no {attribute!r} any more"


def test_changed_is_empty_on_the_installed_releases():
    assert compat.changed() == []


def test_changed_names_a_missing_internal_and_a_reshaped_one(monkeypatch):
    monkeypatch.setitem(compat.HOOKED_INTERNALS, "kombu.messaging.Producer._gone", "(self)")
    monkeypatch.setitem(compat.HOOKED_INTERNALS, "celery.app.amqp.AMQP._create_task_sender", "(self, x)")
    problems = compat.changed()
    assert sorted(p.split(":")[0] for p in problems) == [
        "celery.app.amqp.AMQP._create_task_sender",
        "kombu.messaging.Producer._gone",
    ]


def _private_overrides():
    """(module, class, method) for each private method a taskdeck class defines over a Celery/kombu base."""
    for file in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or not node.bases:
                continue
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef)
                    and item.name.startswith("_")
                    and not item.name.startswith("__")
                ):
                    yield file.relative_to(SOURCE.parent), node.name, item.name


def test_every_private_override_of_a_celery_or_kombu_method_is_listed():
    """A new override of a private method of HOOKED_PACKAGES must be listed in compat.HOOKED_INTERNALS."""
    listed = {path.rsplit(".", 1)[-1] for path in compat.HOOKED_INTERNALS}
    unlisted = []
    for where, cls, method in _private_overrides():
        module = importlib.import_module(str(where.with_suffix("")).replace("/", "."))
        klass = getattr(module, cls, None)
        if klass is None:
            continue
        for base in klass.__mro__[1:]:
            if base.__module__.split(".")[0] in (
                "celery",
                "kombu",
                "django_celery_results",
            ) and method in vars(base):
                if method not in listed:
                    unlisted.append(
                        f"{where}: {cls}.{method} overrides {base.__module__}.{base.__qualname__}"
                    )
                break
    assert unlisted == []
