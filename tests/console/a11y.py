"""An accessibility check any browser test of a console page can use: axe-core, run inside
the page by Playwright, must find no serious or critical violation.

axe-core comes from the `axe-playwright-python` package (a dev dependency, docs/console.md),
which ships `axe.min.js`; it is injected through Playwright's evaluate, which the pages'
strict Content-Security-Policy (no inline script) does not govern, as an extension's would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

__all__ = ["ARTIFACTS", "assert_accessible", "screenshots", "violations"]

# Where the browser tests leave screenshots for a person to look at (gitignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"

_BLOCKING = ("serious", "critical")
_AXE = Axe()


def violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now, of every impact."""
    results = _AXE.run(page)
    found: list[dict[str, Any]] = results.response["violations"]
    return found


def assert_accessible(page: Page) -> None:
    """No serious or critical axe-core violation; the message names each, with where."""
    blocking = [v for v in violations(page) if v.get("impact") in _BLOCKING]
    described = [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node.get("target")) for node in v.get("nodes", [])[:5])
        for v in blocking
    ]
    assert not blocking, f"{page.url}:\n" + "\n".join(described)


def screenshots(page: Page, name: str, *, check: bool = True) -> None:
    """The page at 1280 px and 375 px wide, each saved as `<name>-<width>.png` under
    ARTIFACTS, and (with `check`) checked for accessibility at each width."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        if check:
            assert_accessible(page)
    page.set_viewport_size({"width": 1280, "height": 900})
