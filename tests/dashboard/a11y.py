"""Helpers of the accessibility tests: the dashboard's pages from its URLconf, axe-core, focus checks.

axe-core is vendored in tests/support/vendor/ (MPL-2.0, from the npm
registry): the tests run it in the page without a network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.support.services import ROOT

AXE = ROOT / "tests" / "support" / "vendor" / "axe.min.js"
#: WCAG 2.0 and 2.1, levels A and AA, plus axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
#: Width, height and colour scheme of each look a page is checked in.
MODES = {
    "light": (1280, 900, "light"),
    "dark": (1280, 900, "dark"),
    "phone": (390, 844, "light"),
    "phone-dark": (390, 844, "dark"),
}


@dataclass(frozen=True)
class Route:
    name: str
    params: tuple[str, ...]


def dashboard_routes(namespace: str = "taskdeck") -> list[Route]:
    """Every named URL of the dashboard's namespace, with the parameters it takes."""
    _, resolver = get_resolver().namespace_dict[namespace]

    def walk(patterns: list[Any]) -> Iterator[Route]:
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns)
            elif isinstance(p, URLPattern) and p.name:
                yield Route(p.name, tuple(getattr(p.pattern, "converters", {}) or ()))

    return list(walk(resolver.url_patterns))


def url_of(route: Route, samples: dict[str, str], namespace: str = "taskdeck") -> str:
    missing = [p for p in route.params if p not in samples]
    if missing:
        raise AssertionError(
            f"the dashboard URL {namespace}:{route.name} takes {missing}: add a sample value to the "
            "accessibility test (tests/dashboard/test_dashboard_a11y.py, SAMPLES) so the page is checked"
        )
    return reverse(f"{namespace}:{route.name}", kwargs={p: samples[p] for p in route.params})


AXE_RUN = """tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})
  .then(r => r.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + (n.failureSummary || '').replace(/\\s+/g, ' '))
  })))"""


def axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (the script is added to every page of the context)."""
    return page.evaluate(AXE_RUN, AXE_TAGS)  # type: ignore[no-any-return]


#: What the focused element looks like: a visible outline (or, on SVG, a thicker stroke).
FOCUS_STYLE = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  const r = el.getBoundingClientRect();
  return {
    tag: el.tagName.toLowerCase(),
    text: (el.getAttribute('aria-label') || el.textContent || el.value || '').trim().slice(0, 80),
    id: el.id,
    // a ring, or (an SVG node of the workflow graph) its box drawn thicker in the focus colour
    outline: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2)
      || (el instanceof SVGElement && !!el.querySelector('rect.box')
          && parseFloat(getComputedStyle(el.querySelector('rect.box')).strokeWidth) >= 3),
    visible: r.width > 0 && r.height > 0 && el.checkVisibility(),
    focusVisible: el.matches(':focus-visible'),
    key: el.dataset.focusKey || '',
  };
}"""

#: Everything a keyboard user must be able to reach: links, buttons, fields, summaries, shown.
REACHABLE = """() => {
  const sel = 'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), '
    + 'select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])';
  const els = [...document.querySelectorAll(sel)].filter(el => el.checkVisibility() && !el.closest('[inert]')
    && !el.closest('details:not([open]) > :not(summary)'));
  els.forEach((el, i) => { el.dataset.focusKey = String(i); });
  return els.length;
}"""

#: Put the keyboard's starting point before the first element of the page, as a fresh load does.
FROM_THE_TOP = """() => {
  const start = document.createElement('span');
  start.tabIndex = -1;
  document.body.prepend(start);
  start.focus();
  window.scrollTo(0, 0);
}"""
