"""Refresh the generated parts of the docs from the files the aggregator wrote.

    python scripts/sync_docs.py [DOC.md ...] [--check]   (default: every Markdown file in docs/)

Two kinds of generated text, so that no figure taken from a table is typed by hand:

**Blocks** (whole tables) are delimited by

    <!-- include: results/tables/claims_embedded_post_training.md#Verdicts -->
    ... (replaced) ...
    <!-- /include -->

and replaced by the file's content (from its ``## <section>`` heading, exclusive, to the next
``## `` heading, when ``#<section>`` is given; the file's first ``# `` title line is dropped
otherwise).

**Values** (numbers in prose) are one cell of a table's CSV, written between two markers on
one line:

    <!-- v: cl[claim=C1,sparsity=0.5,attack=deepwordbug].delta_aua %+.1f -->+0.2<!-- /v -->

- ``cl`` names a CSV: an alias declared once in the page by
  ``<!-- values: cl = results/tables/claims_embedded_post_training.csv -->``, or a path
  (relative to the repository root) written in its place;
- ``[key=value,...]``: the row, by column values (numbers compare as numbers); it must match
  exactly one row (a prose number is one cell, never an average typed by hand);
  ``key~=item`` asks that a cell written as a comma-separated list (a summary's ``differs``:
  ``pruner.structure=2:4, schema_version=2``) contain ``item``;
- ``.column``: the column; ``.a,b,c`` shows ``a [b, c]`` (a value and its interval);
- the format (optional): ``%SPEC`` multiplies by 100 (percent or percentage points), then
  formats with the Python format spec ``SPEC`` (``%+.1f`` -> ``+2.1``); ``SPEC`` alone formats
  the raw value (``.2g`` -> ``0.0099``); ``p`` is a p-value with two significant digits
  (``0.0099``, ``4.3e-11``); ``perseed`` shows a ``seed_deltas`` cell as points
  (``+0.92/+1.61/+3.78``); ``#N`` is the N-th number of a cell written as text (a summary's
  ``12.2 [10.2, 14.5] / 87.0``: ``#0`` -> ``12.2``, ``#3`` -> ``87.0``), as written, or
  through a spec, ``#0:.0f`` -> ``12``; ``#0,1,2`` shows ``12.2 [10.2, 14.5]``; none: the
  cell as written in the CSV.

The text between the markers is replaced by the value; ``--check`` fails when it differs.

**Generated regions**: text between ``<!-- numbers: generated [allow=87.5%,0.05] -->`` and
``<!-- /numbers -->`` may not contain a hand-typed decimal or signed number outside value
markers and include blocks (integers such as sparsities ``50%`` or seeds are allowed, and the
tokens listed in ``allow``); ``--check`` (and a plain run) fails on one.

``--check`` exits 1 when a block or value is out of date or a region has a bare number
(nothing is written). A value whose table, row or column does not exist is an error either way.
"""

from __future__ import annotations

import argparse
import csv
import functools
import logging
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("sync_docs")
BLOCK = re.compile(r"(<!-- include: (\S+?)(?:#([^>]+?))? -->\n)(.*?)(<!-- /include -->)", re.S)
ALIAS = re.compile(r"<!-- values: (\w+) = (\S+) -->")
VALUE = re.compile(
    r"(<!-- v: (?P<src>[\w./+-]+)\[(?P<sel>[^\]]*)\]\.(?P<col>[^\n]+?)"
    r"(?: (?P<fmt>%\S*|p|perseed|#\S+|[.,+]\S*))? -->)(?P<text>[^\n]*?)(<!-- /v -->)"
)
REGION = re.compile(r"<!-- numbers: generated(?: allow=(\S+))? -->(.*?)<!-- /numbers -->", re.S)
NUMBER = re.compile(r"[+\-]?\d+(?:\.\d+)?(?:e[+\-]?\d+)?")
SELECT = re.compile(r"\s*([^=~]+?)\s*(~?=)(.*)")
BARE = re.compile(r"(?<![\w.\-+−])[+\-−]?\d+\.\d+|(?<![\w.\-+−])[+\-−]\d+(?![\w:])")


class DocError(Exception):
    """A generated part that cannot be filled (missing file, row or column)."""


def extract(path: Path, section: str | None) -> str:
    """The text a block shows: a section of ``path`` or the whole file without its title."""
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (run python -m benchmark.aggregate)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if section is None:
        if lines and lines[0].startswith("# "):
            lines = lines[1:]
    else:
        heads = [i for i, x in enumerate(lines) if x.strip() == f"## {section.strip()}"]
        if not heads:
            raise SystemExit(f"error: {path} has no section '## {section}'")
        start = heads[0] + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")),
                   len(lines))  # fmt: skip
        lines = lines[start:end]
    return "\n".join(lines).strip("\n") + "\n"


@functools.lru_cache(maxsize=64)
def _read_csv(path: Path, mtime: float) -> tuple[dict[str, str], ...]:
    with path.open(encoding="utf-8", newline="") as fh:
        return tuple(csv.DictReader(fh))


def _same(cell: str, want: str) -> bool:
    if cell == want:
        return True
    try:
        return math.isclose(float(cell), float(want), rel_tol=0, abs_tol=1e-9)
    except ValueError:
        return False


def format_value(raw: str, fmt: str | None) -> str:
    """A CSV cell as the prose shows it (module docstring: the format)."""
    if not fmt:
        return raw
    if fmt.startswith("#"):  # parts of a formatted cell: "12.2 [10.2, 14.5] / 87.0"
        return _cell_parts(raw, fmt)
    if fmt == "perseed":  # 0:+0.009174;1:+0.016055 -> +0.92/+1.61 (points)
        try:
            return "/".join(f"{100 * float(x.split(':')[1]):+.2f}" for x in raw.split(";"))
        except (IndexError, ValueError) as exc:
            raise DocError(f"cell {raw!r} is not a list of per-seed deltas") from exc
    try:
        x = float(raw)
    except ValueError as exc:
        raise DocError(f"cell {raw!r} is not a number (format {fmt!r})") from exc
    if math.isnan(x):
        raise DocError(f"cell is empty (format {fmt!r})")
    if fmt == "p":
        return f"{x:.2g}".replace("e-0", "e-")
    if fmt.startswith("%"):
        return format(100 * x, fmt[1:])
    try:
        return format(x, fmt)
    except ValueError as exc:
        raise DocError(f"format {fmt!r}: {exc}") from exc


def _cell_parts(raw: str, fmt: str) -> str:
    """``#N[:SPEC]`` or ``#N,M,K`` of a cell written as text (module docstring)."""
    idx, _, spec = fmt[1:].partition(":")
    nums = NUMBER.findall(raw)
    try:
        picks = [nums[int(i)] for i in idx.split(",")]
        vals = [format(float(x), spec) if spec else x for x in picks]
    except (IndexError, ValueError) as exc:
        raise DocError(f"cell {raw!r} has no number(s) {fmt!r} ({exc})") from exc
    if len(vals) == 3:
        return f"{vals[0]} [{vals[1]}, {vals[2]}]"
    if len(vals) != 1:
        raise DocError(f"format {fmt!r}: one number, or a value and its two bounds")
    return vals[0]


def _matches(row: dict[str, str], key: str, op: str, want: str) -> bool:
    if key not in row:
        return False
    if op == "~=":
        return want in [x.strip() for x in row[key].split(",")]
    return _same(row[key], want)


def lookup(src: str, sel: str, col: str, fmt: str | None, aliases: dict[str, str]) -> str:
    """The text of one value marker (module docstring)."""
    path = ROOT / aliases.get(src, src)
    if not path.is_file():
        raise DocError(f"{src}: no table {path} (alias or path; run python -m benchmark.aggregate)")
    rows = _read_csv(path, path.stat().st_mtime)
    conds = [SELECT.fullmatch(c) for c in sel.split(",") if c.strip()]
    if not all(conds):
        raise DocError(f"{src}[{sel}]: a row is selected by key=value (or key~=item) pairs")
    hits = [r for r in rows if all(_matches(r, m[1], m[2], m[3].strip()) for m in conds)]
    if len(hits) != 1:
        raise DocError(f"{src}[{sel}] matches {len(hits)} rows of {path.name}, not one")
    cols = col.split(",")
    missing = [c for c in cols if c not in hits[0]]
    if missing:
        raise DocError(f"{src}[{sel}]: {path.name} has no column {missing[0]!r}")
    vals = [format_value(hits[0][c], fmt) for c in cols]
    if len(vals) == 3:
        return f"{vals[0]} [{vals[1]}, {vals[2]}]"
    if len(vals) != 1:
        raise DocError(f"{src}[{sel}].{col}: one column, or a value and its two bounds")
    return vals[0]


def sync(text: str) -> str:
    """``text`` with every block and value marker refreshed (raises DocError)."""

    def block(m: re.Match) -> str:
        return m.group(1) + "\n" + extract(ROOT / m.group(2), m.group(3)) + "\n" + m.group(5)

    aliases = dict(ALIAS.findall(text))

    def value(m: re.Match) -> str:
        new = lookup(m["src"], m["sel"], m["col"], m["fmt"], aliases)
        return m.group(1) + new + m.group(7)

    return VALUE.sub(value, BLOCK.sub(block, text))


def bare_numbers(text: str) -> list[str]:
    """Hand-typed numbers inside the generated regions of ``text`` (module docstring)."""
    found = []
    for m in REGION.finditer(text):
        allow = set((m.group(1) or "").split(",")) - {""}
        body = BLOCK.sub("", VALUE.sub("", m.group(2)))
        body = re.sub(r"<!--.*?-->", "", body)
        body = re.sub(r"`[^`]*`", "", body)  # code: names such as `akr_official`, commands
        for tok in BARE.finditer(body):
            word = tok.group(0)
            tail = body[tok.end() : tok.end() + 1]
            if word in allow or word + tail in allow:
                continue
            line = body[: tok.start()].count("\n")
            context = body.splitlines()[line] if body.splitlines() else ""
            found.append(f"{word!r} in: {context.strip()[:90]}")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("docs", nargs="*", type=Path, default=sorted((ROOT / "docs").rglob("*.md")))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale = errors = 0
    for doc in args.docs:
        old = doc.read_text(encoding="utf-8")
        try:
            new = sync(old)
        except DocError as exc:
            log.error("error: %s: %s", doc, exc)
            errors += 1
            continue
        for bare in bare_numbers(new):
            log.error("error: %s: a hand-typed number in a generated region: %s", doc, bare)
            errors += 1
        if new != old:
            stale += 1
            if not args.check:
                doc.write_text(new, encoding="utf-8")
            log.info("%s: %s", "out of date" if args.check else "updated", doc)
    if errors:
        return 1
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
