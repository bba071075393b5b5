"""Refresh the generated blocks of the docs from the files the aggregator wrote.

    python scripts/sync_docs.py [DOC.md ...] [--check]   (default: every Markdown file in docs/)

A block is delimited in the Markdown by

    <!-- include: results/tables/claims_embedded_post_training.md#Verdicts -->
    ... (replaced) ...
    <!-- /include -->

and is replaced by the file's content (from its ``## <section>`` heading, exclusive, to the next
``## `` heading, when ``#<section>`` is given; the file's first ``# `` title line is dropped
otherwise). So the tables quoted in the docs are the committed tables, never hand copies.
``--check`` exits 1 when a block is out of date (nothing is written).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("sync_docs")
BLOCK = re.compile(r"(<!-- include: (\S+?)(?:#([^>]+?))? -->\n)(.*?)(<!-- /include -->)", re.S)


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


def sync(text: str) -> str:
    def repl(m: re.Match) -> str:
        return m.group(1) + "\n" + extract(ROOT / m.group(2), m.group(3)) + "\n" + m.group(5)

    return BLOCK.sub(repl, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("docs", nargs="*", type=Path, default=sorted((ROOT / "docs").rglob("*.md")))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale = 0
    for doc in args.docs:
        old = doc.read_text(encoding="utf-8")
        new = sync(old)
        if new != old:
            stale += 1
            if not args.check:
                doc.write_text(new, encoding="utf-8")
            log.info("%s: %s", "out of date" if args.check else "updated", doc)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
