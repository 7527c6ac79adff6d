"""The end of a bench run: its tables, the machine it ran on, the JSON record and the chart."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def finish(
    data: dict[str, Any],
    tables: list[str],
    json_path: Path,
    chart: Callable[[dict[str, Any], Path], None],
    chart_path: Path,
    tmp: Path,
) -> None:
    """Print ``tables`` and the machine, record ``data`` as JSON, draw the chart, remove ``tmp``."""
    from bench.brokers import versions
    from bench.results import machine

    data["machine"] = [*machine(), versions()]
    print("\n".join(tables))
    for line in data["machine"]:
        print(f"- {line}")
    print(f"- load average (1, 5, 15 min) before: {data['load']['before']}; after: {data['load']['after']}")
    print(f"- wall time {data['elapsed']:.0f} s")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1))
    chart(data, chart_path)
    print(f"\nrecorded in {json_path}; chart {chart_path}")
    shutil.rmtree(tmp, ignore_errors=True)


def run_and_finish(
    args: argparse.Namespace,
    name: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], list[str]],
    chart: Callable[[dict[str, Any], Path], None],
) -> dict[str, Any]:
    """Run a bench in a temporary folder of its own (``args.tmp``, logs in ``args.logs``), then finish.

    If the run fails, the folder is kept and its logs' place printed.
    """
    args.tmp = Path(tempfile.mkdtemp(prefix=f"taskdeck-bench-{name}-"))
    args.logs = args.tmp / "logs"
    try:
        data = run(args)
    except BaseException:
        print(f"logs kept in {args.logs}", file=sys.stderr)
        raise
    finish(data, report(data), args.json, chart, args.chart, args.tmp)
    return data
