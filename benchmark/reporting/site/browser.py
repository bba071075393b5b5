"""The headless Chromium that checks and pictures the site: Debian's ``chromium`` package
driven by Playwright through its executable path (Playwright's own browser download is not
used), with an empty user-data folder. The browser test (``tests/test_site.py``) and the
screenshot script (``scripts/site_screenshot.py``) open it the same way, from here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run")


def chromium_path() -> str | None:
    """``$RPB_CHROMIUM``, else ``chromium`` on the PATH (``apt-get install chromium``, as
    ``scripts/setup.sh`` does); ``None`` when there is neither."""
    return os.environ.get("RPB_CHROMIUM") or shutil.which("chromium")


def missing() -> str | None:
    """What keeps the headless browser from starting, in one line (``None``: nothing)."""
    if not chromium_path():
        return ("no chromium executable (apt-get install chromium, as scripts/setup.sh does, "
                "or set RPB_CHROMIUM=/path)")  # fmt: skip
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright, as scripts/setup.sh does)"
    return None


@contextmanager
def headless_chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A Playwright browser context of headless Chromium with a ``width`` x ``height``
    viewport and a fresh user-data folder (removed afterwards). Raises ``RuntimeError`` with
    :func:`missing`'s line when Chromium or Playwright is not installed."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="rpb-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def watch(page: Any) -> list[str]:
    """Collect what must not happen while ``page`` loads: console errors and warnings, page
    errors, failed requests and requests for anything but a local file (the site fetches
    nothing). Returns the list it appends to."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)  # fmt: skip
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
            else problems.append(f"network request: {r.url}"))  # fmt: skip
    return problems
