"""The access policy is one module that the dashboard, the API and /metrics use, not each other."""

from __future__ import annotations

import ast
from pathlib import Path

import taskdeck

PACKAGE = Path(taskdeck.__file__).parent


def imported(path: Path) -> set[str]:
    """The taskdeck modules ``path`` imports (at the top or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("taskdeck")}


def test_the_dashboard_the_api_and_metrics_depend_on_the_policy_not_on_each_other():
    policy = {p for f in (PACKAGE / "policy").glob("*.py") for p in imported(f)}
    assert not {m for m in policy if m.startswith(("taskdeck.dashboard", "taskdeck.api", "taskdeck.metrics"))}
    assert not {m for m in imported(PACKAGE / "metrics.py") if m.startswith("taskdeck.api")}
    api = imported(PACKAGE / "api" / "auth.py") | imported(PACKAGE / "api" / "__init__.py")
    assert {m for m in api if m.startswith("taskdeck.dashboard.access")} == set()
    for user in ("metrics.py", "api/auth.py", "dashboard/access.py"):
        assert any(m.startswith("taskdeck.policy") for m in imported(PACKAGE / user)), user
