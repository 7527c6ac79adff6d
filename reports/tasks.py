"""Reports: a report built by a chain, on the medium lane (glob route).

Each step's result is the next step's first argument (the notes' TASK CHAINING).
"""

import datetime

from celery import chain, shared_task


@shared_task
def collect_sales(day: str) -> list[dict]:
    """Sales of ``day`` (deterministic sample data standing in for a query)."""
    seed = datetime.date.fromisoformat(day).toordinal()
    return [
        {
            "sku": f"SKU-{(seed + i) % 7}",
            "quantity": (seed * (i + 3)) % 5 + 1,
            "cents": 250 * (i + 1),
        }
        for i in range(6)
    ]


@shared_task
def summarize(sales: list[dict]) -> dict:
    """Totals per SKU and overall, from collect_sales' result."""
    per_sku: dict[str, int] = {}
    for sale in sales:
        per_sku[sale["sku"]] = per_sku.get(sale["sku"], 0) + sale["quantity"] * sale["cents"]
    return {"per_sku": dict(sorted(per_sku.items())), "total_cents": sum(per_sku.values())}


@shared_task
def render_report(summary: dict, title: str = "Daily sales") -> str:
    """A plain-text report from summarize's result."""
    lines = [title, "=" * len(title)]
    lines += [f"{sku:<8} {cents / 100:>10.2f}" for sku, cents in summary["per_sku"].items()]
    lines.append(f"{'total':<8} {summary['total_cents'] / 100:>10.2f}")
    return "\n".join(lines)


def daily_report(day: str) -> chain:
    """collect_sales(day) → summarize → render_report."""
    return chain(collect_sales.s(day), summarize.s(), render_report.s(title=f"Sales {day}"))
