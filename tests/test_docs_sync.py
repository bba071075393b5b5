"""scripts/sync_docs.py: the tables quoted in the docs are the committed tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "scripts" / "sync_docs.py")
sync_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_docs)


def test_blocks_are_replaced_by_the_files_sections(tmp_path: Path) -> None:
    table = tmp_path / "t.md"
    table.write_text("# Title\n\ncaption\n\n## A\n\n| a |\n|---|\n| 1 |\n\n## B\n\nb text\n")
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n<!-- include: {table}#A -->\nstale\n<!-- /include -->\nmiddle\n"
                   f"<!-- include: {table} -->\n<!-- /include -->\nend\n")  # fmt: skip
    assert sync_docs.main([str(doc), "--check"]) == 1
    assert sync_docs.main([str(doc)]) == 0
    text = doc.read_text()
    assert "stale" not in text and "| 1 |" in text and text.count("b text") == 1
    assert "# Title" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert sync_docs.main([str(doc), "--check"]) == 0  # idempotent
    doc.write_text(f"<!-- include: {table}#C -->\n<!-- /include -->\n")
    with pytest.raises(SystemExit, match="no section"):
        sync_docs.main([str(doc)])


def test_committed_docs_quote_the_committed_tables() -> None:
    assert sync_docs.main(["--check"]) == 0  # every Markdown file under docs/
