"""Debian's Chromium, driven by Playwright's sync API, for the tests that open pages in a real
browser (/docs and the console). Skipped where it is not installed, except under CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright

__all__ = ["CHROMIUM", "launched_chromium"]

CHROMIUM = "/usr/bin/chromium"  # Debian's (apt-get install chromium), not Playwright's download


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """Chromium, headless, for the length of the block. Playwright's sync API keeps an event
    loop running: start it after any `asyncio.run` a fixture makes."""
    if shutil.which(CHROMIUM) is None:
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
