"""The static site (``python -m benchmark.aggregate --site DIR``), built from committed records
copied into a temporary results folder, checked as files and in a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmark.reporting.site.examples import marked_words

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs" / "embedded_post_training"
# akr at 50% (two seeds: a bootstrap interval), the dense model, magnitude at 87.5% (a
# degenerate row) on DeepWordBug, and akr at 50% on TextFooler (a second leaderboard table)
RECORDS = ("9323e737d3dd", "ae9d5412b72c", "ee7689eca3c6", "be53433417da", "020f98c74c8d")


def test_changed_words_are_marked_on_both_sides():
    left, right = marked_words("it 's a charming and often affecting journey .",
                               "it 's a chaiming and often affecting journey trip .")  # fmt: skip
    assert [w for w, c in left if c] == ["charming"]  # replaced
    assert [w for w, c in right if c] == ["chaiming", "trip"]  # its replacement, an insertion
    assert [w for w, _ in right] == [
        "it",
        "'s",
        "a",
        "chaiming",
        "and",
        "often",
        "affecting",
        "journey",
        "trip",
        ".",
    ]
    assert marked_words("a b c", "a c") == (
        [("a", False), ("b", True), ("c", False)],
        [("a", False), ("c", False)],
    )  # a deletion
    assert marked_words("a b", None) == ([("a", False), ("b", False)], [])
    assert not any(c for _, c in marked_words("same words", "same words")[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site of five committed records (copied, the originals only read)."""
    from benchmark.reporting.site import build_site

    tmp = tmp_path_factory.mktemp("site")
    runs = tmp / "results" / "runs" / "embedded_post_training"
    runs.mkdir(parents=True)
    for rid in RECORDS:
        for name in (f"{rid}.json", f"{rid}.attack.jsonl.gz"):
            shutil.copyfile(RUNS / name, runs / name)
    index = build_site(tmp / "results", tmp / "site", n_boot=200)
    return index.parent


def _pages(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.html")) + sorted(folder.glob("config/*.html"))


def test_the_site_is_self_contained_and_complete(site):
    index = (site / "index.html").read_text()
    links = re.findall(r'href="(config/[0-9a-f]{12}\.html)"', index)
    assert len(links) == len(set(links)) == 4  # one page per configuration
    assert index.count("<table") == 2 and index.count('data-degenerate="yes"') == 1
    for page in _pages(site):
        text = page.read_text()
        for ref in re.findall(r'(?:src|href)="([^"]+)"', text):
            assert not re.match(r"[a-z]+://", ref), f"{page.name} fetches {ref}"
            if not ref.startswith(("data:", "#")):
                assert (page.parent / ref).is_file(), f"{page.name}: broken link {ref}"
    conf = (site / links[0]).read_text()
    assert "<mark>" in conf and "Threat model" in conf and "Provenance" in conf
    assert 'data-result="successful"' in conf and "git" in conf
    assert len(list((site / "plots").glob("*.png"))) == 2  # deepwordbug and textfooler_offline
    assert len(list((site / "records" / "embedded_post_training").glob("*.json"))) == 5
    claims = (site / "claims.html").read_text()
    assert "embedded_post_training" in claims and "C1" in claims and "verdict" in claims
    compare = html.unescape((site / "compare.html").read_text())
    assert "against akr" in compare and "Δ Aua" in compare
    assert "no records of reference 'sparsegpt'" in compare  # not copied: said, not hidden


@pytest.mark.slow
def test_aggregate_writes_the_site(tmp_path):
    results = tmp_path / "results"
    runs = results / "runs" / "embedded_post_training"
    runs.mkdir(parents=True)
    for rid in RECORDS[:3]:
        for name in (f"{rid}.json", f"{rid}.attack.jsonl.gz"):
            shutil.copyfile(RUNS / name, runs / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.aggregate", "--results-dir", str(results), "--site",
         str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert len(list((tmp_path / "site" / "config").glob("*.html"))) == 2
    assert (results / "leaderboard.csv").is_file()
    assert "run_ids" not in (results / "leaderboard.csv").read_text().splitlines()[0]


# ---------------------------------------------------------------------------------------------
# In a real browser: Debian's chromium driven by Playwright through its executable path

CHROMIUM = os.environ.get("RPB_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium page factory; skipped when chromium or Playwright is missing."""
    if not CHROMIUM:
        pytest.skip("no chromium executable (apt-get install chromium, as scripts/setup.sh does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "playwright is not installed (pip install playwright, as scripts/setup.sh does)"
        )
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="rpb-chromium-"), executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            viewport={"width": 1400, "height": 900},
        )  # fmt: skip
        yield context
        context.close()


def _open(browser, path: Path):
    """(page, problems): console errors and warnings, page errors, failed and non-file
    requests while ``path`` loads."""
    page = browser.new_page()
    page.set_default_timeout(180_000)  # a shared, loaded CI machine: slow, not broken
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)  # fmt: skip
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
            else problems.append(f"network request: {r.url}"))  # fmt: skip
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems


def test_every_page_loads_without_console_errors(site, browser):
    for path in _pages(site):
        page, problems = _open(browser, path)
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.src)"
        )
        assert problems == [] and broken == [], (path.name, problems, broken)
        page.close()


def _column(page, table, header: str) -> list[str]:
    idx = table.locator("thead th").all_inner_texts().index(header)
    return [row.locator("td").nth(idx).get_attribute("data-sort") or ""
            for row in table.locator("tbody tr").all()]  # fmt: skip


def test_leaderboard_sorts_and_filters(site, browser):
    page, problems = _open(browser, site / "index.html")
    table = page.locator("section.group", has_text="deepwordbug").locator("table")
    head = table.locator("thead th", has_text="Aua %")
    head.click()
    values = [float(v) for v in _column(page, table, "Aua %")]
    assert len(values) == 3 and values == sorted(values)
    head.click()
    assert [float(v) for v in _column(page, table, "Aua %")] == sorted(values, reverse=True)
    table.locator("thead th", has_text="pruner").click()
    assert table.locator("tbody tr td:first-child").all_inner_texts() == ["akr", "magnitude",
                                                                          "none"]  # fmt: skip
    rows = page.locator("#board tbody tr")
    page.fill("#board-text", "magnitude")
    visible = [r for r in rows.all() if r.is_visible()]
    assert [r.get_attribute("data-pruner") for r in visible] == ["magnitude"]
    assert page.locator("section.group", has_text="textfooler_offline").is_hidden()
    assert "1 of 4 rows shown" in page.inner_text(".filters .shown")
    page.fill("#board-text", "")
    page.check("#board-hide-degenerate")
    visible = [r for r in rows.all() if r.is_visible()]
    assert len(visible) == 3 and all(r.get_attribute("data-degenerate") == "no" for r in visible)
    page.uncheck("#board-hide-degenerate")
    page.select_option("#board-attack", "textfooler_offline")
    visible = [r for r in rows.all() if r.is_visible()]
    assert [r.get_attribute("data-attack") for r in visible] == ["textfooler_offline"]
    assert page.locator("section.group", has_text="deepwordbug").is_hidden()
    assert problems == []


def test_example_page_shows_the_marked_words_and_filters_by_result(site, browser):
    index = (site / "index.html").read_text()
    link = re.search(r'<a href="(config/[0-9a-f]{12}\.html)">akr</a>', index).group(1)
    page, problems = _open(browser, site / link)
    marks = page.locator("tr[data-result=successful] td.texts .pert mark")
    assert marks.count() > 0 and marks.first.is_visible()
    first = page.locator("tr[data-result=successful]").first
    changed = first.locator(".orig mark").all_inner_texts()
    replaced = first.locator(".pert mark").all_inner_texts()
    assert changed and replaced and changed != replaced
    section = page.locator("section.examples").first
    section.locator("select.result-filter").select_option("failed")
    rows = section.locator("tbody tr")
    shown = [r.get_attribute("data-result") for r in rows.all() if r.is_visible()]
    assert shown and set(shown) == {"failed"} and len(shown) < rows.count()
    assert f"{len(shown)} of {rows.count()} rows shown" in section.inner_text()
    assert problems == []
