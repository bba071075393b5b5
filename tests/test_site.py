"""The static site (``python -m benchmark.aggregate --site DIR``), built from committed records
copied into a temporary results folder, checked as files and in a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
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
# (benchmark.reporting.site.browser, which scripts/site_screenshot.py uses too)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium page factory; skipped when chromium or Playwright is missing."""
    from benchmark.reporting.site.browser import headless_chromium, missing

    if missing():
        pytest.skip(missing())
    with headless_chromium(1400, 900) as context:
        yield context


def _open(browser, path: Path):
    """(page, problems): console errors and warnings, page errors, failed and non-file
    requests while ``path`` loads."""
    from benchmark.reporting.site.browser import watch

    page = browser.new_page()
    page.set_default_timeout(180_000)  # a shared, loaded CI machine: slow, not broken
    problems = watch(page)
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


# ---------------------------------------------------------------------------------------------
# The site of every committed record


@pytest.fixture(scope="module")
def full_site(tmp_path_factory):
    """``aggregate --site`` on a copy of every committed record (the leaderboard, the claims and
    comparisons with their 10,000-resample bootstraps: what a reader of the project builds)."""
    tmp = tmp_path_factory.mktemp("full")
    shutil.copytree(ROOT / "results" / "runs", tmp / "results" / "runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.aggregate", "--results-dir", str(tmp / "results"),
         "--site", str(tmp / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp


@pytest.mark.slow
def test_the_site_of_every_committed_record_lists_every_leaderboard(full_site, browser):
    import pandas as pd

    from benchmark.reporting.records import load_records

    # every (model, dataset, attack) that some finished record has, read from the records
    df = load_records(full_site / "results")
    ok = df[df["status"] == "ok"]
    model = ok["model_label"].fillna(ok["model"])
    want = sorted(set(zip(model, ok["dataset"], ok["attack"], strict=True)))
    assert len(want) > 1
    board = pd.read_csv(full_site / "results" / "leaderboard.csv")
    page, problems = _open(browser, full_site / "site" / "index.html")
    sections = page.locator("section.group")
    shown = [(s.get_attribute("data-model"), s.get_attribute("data-dataset"),
              s.get_attribute("data-attack")) for s in sections.all()]  # fmt: skip
    assert sorted(shown) == want and len(set(shown)) == len(shown)
    for s, (m, d, a) in zip(sections.all(), shown, strict=True):
        rows = s.locator("tbody tr")
        n = int(((board["model"] == m) & (board["dataset"] == d) & (board["attack"] == a)).sum())
        assert rows.count() == n > 0, (m, d, a)
        assert s.locator("h2").inner_text() == f"{m} · {d} · {a}"
    assert page.locator("#board tbody tr").count() == len(board)
    assert f"{len(board)} of {len(board)} rows shown" in page.inner_text(".filters .shown")
    assert problems == []
    for name in ("claims.html", "compare.html", "plots.html"):
        other, trouble = _open(browser, full_site / "site" / name)
        assert trouble == [], (name, trouble)
        other.close()
