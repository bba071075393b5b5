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


def _table(tmp_path: Path) -> Path:
    csv = tmp_path / "claims.csv"
    csv.write_text("claim,sparsity,attack,delta_aua,lo,hi,p,seed_deltas\n"
                   "C1,0.5,tf,0.02102,0.00917,0.03326,0.000761,0:+0.009174;1:+0.016055\n"
                   "C1,0.875,tf,0.0069,-0.023,0.038,0.706,\n")  # fmt: skip
    return csv


def test_values_in_prose_are_filled_from_the_table_and_checked(tmp_path: Path) -> None:
    csv = _table(tmp_path)
    marker = "<!-- v: t[claim=C1,sparsity=0.50,attack=tf].delta_aua,lo,hi %+.1f -->"
    doc = tmp_path / "doc.md"
    doc.write_text(
        f"<!-- values: t = {csv} -->\nAKR is above, {marker}+9.9 [0, 0]<!-- /v -->, "
        "Holm p <!-- v: t[claim=C1,sparsity=0.5].p p -->1<!-- /v --> (per seed "
        "<!-- v: t[claim=C1,sparsity=0.5].seed_deltas perseed --><!-- /v -->).\n"
    )
    assert sync_docs.main([str(doc), "--check"]) == 1  # a number disagrees with its table
    assert sync_docs.main([str(doc)]) == 0
    text = doc.read_text()
    assert f"{marker}+2.1 [+0.9, +3.3]<!-- /v -->" in text
    assert "-->0.00076<!-- /v -->" in text and "-->+0.92/+1.61<!-- /v -->" in text
    assert sync_docs.main([str(doc), "--check"]) == 0
    csv.write_text(csv.read_text().replace("0.02102", "0.03102"))  # the table moves on
    assert sync_docs.main([str(doc), "--check"]) == 1
    for broken in (
        "t[claim=C9].p p",
        "t[claim=C1].p p",
        "t[claim=C1,sparsity=0.5].nope",
        "u[claim=C1,sparsity=0.5].p",
    ):  # no row, two rows, no column, no table
        doc.write_text(f"<!-- values: t = {csv} -->\nx <!-- v: {broken} -->1<!-- /v -->\n")
        assert sync_docs.main([str(doc)]) == 1


def test_generated_region_rejects_a_hand_typed_number(tmp_path: Path) -> None:
    csv = _table(tmp_path)
    value = f"<!-- v: {csv}[claim=C1,sparsity=0.5,attack=tf].delta_aua %+.1f -->+2.1<!-- /v -->"
    good = (f"<!-- numbers: generated allow=87.5% -->\nAt 50% and 87.5% (seeds 0-2), C1-C3 "
            f"`p = 0.05`: {value} points.\n<!-- /numbers -->\n")  # fmt: skip
    doc = tmp_path / "doc.md"
    doc.write_text(good)
    assert sync_docs.main([str(doc), "--check"]) == 0
    for bare in ("+2.1", "0.012", "-0.9", "1e-4 is 0.0001"):
        doc.write_text(good.replace(" points.", f" points, and {bare}."))
        assert sync_docs.main([str(doc), "--check"]) == 1, bare
    doc.write_text(good + "Outside a region 0.012 is allowed.\n")
    assert sync_docs.main([str(doc), "--check"]) == 0


def test_breaking_a_number_of_the_committed_claims_prose_fails(tmp_path: Path) -> None:
    """docs/results.md's claims prose is generated: a hand edit of one of its numbers fails."""
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    markers = list(sync_docs.VALUE.finditer(text))
    assert len(markers) >= 40 and sync_docs.REGION.search(text)
    m = next(x for x in markers if "claim=C1,sparsity=0.5,attack=textfooler_offline" in x[0])
    doc = tmp_path / "results.md"
    doc.write_text(text[: m.start("text")] + "+9.9" + text[m.end("text") :], encoding="utf-8")
    assert sync_docs.main([str(doc), "--check"]) == 1
    # and a number typed by hand into a generated region, outside a marker
    doc.write_text(text.replace("does not replicate. At 50% under", "does not replicate "
                                "(+2.1). At 50% under", 1), encoding="utf-8")  # fmt: skip
    assert sync_docs.main([str(doc), "--check"]) == 1


def test_values_from_a_summary_cell_and_a_list_column(tmp_path: Path) -> None:
    """``differs~=item`` picks a row by one entry of a list cell; ``#N`` one number of a cell."""
    csv = tmp_path / "summary.csv"
    csv.write_text('pruner,differs,clean %,dwb Aua/Suc %\n'
                   'akr,"pruner.structure=2:4, schema_version=2","88.1 [85.8, 90.1]",'
                   '"10.9 [9.0, 13.1] / 87.6"\n'
                   'akr,"pruner.structure=unstructured, schema_version=2","88.5 [86.5, 90.4]",'
                   'not run\n')  # fmt: skip
    sel = "pruner=akr,differs~=pruner.structure=2:4"
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- values: s = {csv} -->\n"
                   f"clean <!-- v: s[{sel}].clean % #0 -->0<!-- /v -->, "
                   f"Aua <!-- v: s[{sel}].dwb Aua/Suc % #0,1,2 -->0<!-- /v --> "
                   f"(Suc <!-- v: s[{sel}].dwb Aua/Suc % #3:.0f -->0<!-- /v -->%)\n")  # fmt: skip
    assert sync_docs.main([str(doc)]) == 0
    text = doc.read_text()
    assert "-->88.1<!--" in text and "-->10.9 [9.0, 13.1]<!--" in text and "-->88<!--" in text
    assert sync_docs.main([str(doc), "--check"]) == 0
    for broken in (
        "s[pruner=akr,differs~=structure=2:4].clean % #0",  # an entry is matched whole
        "s[pruner=akr,differs~=schema_version=2].clean % #0",  # two rows
        "s[pruner=akr,differs~=pruner.structure=unstructured].dwb Aua/Suc % #0",  # not run
        f"s[{sel}].clean % #5",  # no such number
    ):
        doc.write_text(f"<!-- values: s = {csv} -->\nx <!-- v: {broken} -->1<!-- /v -->\n")
        assert sync_docs.main([str(doc)]) == 1, broken
