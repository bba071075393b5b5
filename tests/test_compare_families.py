"""Comparison families declared before the rows (conf/compare/*.yaml, issue 27): Holm within a
family over the cells it declares, exploratory rows in their own family, undeclared rows not
adjusted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_stats import pruner_option, write_run

from benchmark.reporting import aggregate, compare
from benchmark.reporting.records import load_records


def _run(tmp: Path, run_id: str, pruner: str, survive: int, **cfg) -> None:
    write_run(tmp, "e", run_id, pruner, 0.5, 0, list(range(survive)),
              extra_cfg={**pruner_option(pruner), **cfg})  # fmt: skip


def _spec(tmp: Path) -> dict:
    """Registered: magnitude and wanda at 50% (2 cells); exploratory: their 2:4 variants."""
    spec = {"experiment": "e", "reference": "none", "num_examples": 20, "families": [
        {"name": "grid", "text": "t", "cells": [
            {"pruners": ["magnitude", "wanda"], "sparsities": [0.5], "attacks": ["pwws"]}]},
        {"name": "nm", "text": "t", "exploratory": True, "cells": [
            {"pruners": ["magnitude", "wanda"], "set": {"structure": "2:4"},
             "sparsities": [0.5], "attacks": ["pwws"]}]},
    ]}  # fmt: skip
    path = tmp / "fam.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return compare.load_families(path)


def test_family_m_is_what_was_declared_not_what_exists(tmp_path: Path) -> None:
    write_run(tmp_path, "e", "dense", "none", 0.0, 0, [], extra_cfg=pruner_option("none"))
    # magnitude: 9 of 20 survive against none -> McNemar(9, 0) = 2 / 512
    _run(tmp_path, "m", "magnitude", 9)
    fam = _spec(tmp_path)
    table = compare.compare_table(load_records(tmp_path), "e", "none", n_boot=200,
                                  families=fam).set_index("pruner")  # fmt: skip
    p = 2 / 512
    assert table.loc["magnitude", "p_value"] == pytest.approx(p)
    # wanda was declared but has not run: it counts as p = 1, m = 2
    assert table.loc["magnitude", "family"] == "grid"
    assert table.loc["magnitude", "p_adjusted"] == pytest.approx(2 * p)
    # exploratory rows join their own family and do not move the registered one; a row that
    # no family declares (unstructured magnitude at another setting) is not adjusted
    _run(tmp_path, "m24", "magnitude", 20, structure="2:4")
    _run(tmp_path, "w24", "wanda", 3, structure="2:4")
    _run(tmp_path, "mx", "magnitude", 4, granularity="global")
    table = compare.compare_table(load_records(tmp_path), "e", "none", n_boot=200,
                                  families=fam)  # fmt: skip
    by = {(r.pruner, r.differs): r for r in table.itertuples()}
    plain = [r for k, r in by.items() if k[0] == "magnitude" and "layer" in k[1]
             and "unstructured" in k[1]]  # fmt: skip
    assert len(plain) == 1 and plain[0].family == "grid"
    assert plain[0].p_adjusted == pytest.approx(2 * p)  # unchanged
    nm = table[table["family"] == "nm"].set_index("pruner")
    # 2:4: McNemar(20, 0) = 2^-19 and McNemar(3, 0) = 0.25 -> Holm over 2: 2^-18, 0.25
    assert nm.loc["magnitude", "p_adjusted"] == pytest.approx(2 * 2.0**-19)
    assert nm.loc["wanda", "p_adjusted"] == pytest.approx(0.25)
    loose = table[table["family"] == ""]
    assert len(loose) == 1 and loose["p_value"].notna().all() and loose["p_adjusted"].isna().all()
    md = compare.render_markdown(table, "e", "none", 200, fam, "fam")
    assert "`grid` (registered, 2 declared cells, 1 in this table" in md
    assert "`nm` (exploratory, 2 declared cells, 2 in this table" in md
    assert "1 tested row(s) in no declared family: not adjusted" in md


def test_a_spec_must_name_the_comparison_and_each_cell_once(tmp_path: Path) -> None:
    fam = _spec(tmp_path)
    write_run(tmp_path, "e", "dense", "none", 0.0, 0, [])
    with pytest.raises(ValueError, match="compare spec declares"):
        compare.compare_table(load_records(tmp_path), "e", "magnitude", families=fam)
    bad = yaml.safe_load((tmp_path / "fam.yaml").read_text(encoding="utf-8"))
    bad["families"][1]["cells"][0].pop("set")  # now the same cells as `grid`
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="is in families 'grid' and 'nm'"):
        compare.load_families(tmp_path / "bad.yaml")


def test_committed_specs_load_and_cli_uses_them(tmp_path: Path) -> None:
    for path in sorted(compare.COMPARE_DIR.glob("*.yaml")):
        spec = compare.load_families(path)
        assert path.stem == compare.spec_stem(spec["experiment"], spec["reference"],
                                              spec.get("reference_exp"))  # fmt: skip
    grid = compare.load_families("embedded_post_training_vs_sparsegpt")["families"][0]
    assert grid["name"] == "grid" and len(compare.declared_cells(grid)) == 18
    write_run(tmp_path, "embedded_post_training", "d", "none", 0.0, 0, [1])
    write_run(tmp_path, "embedded_post_training", "a", "akr", 0.5, 0, [1, 2],
              extra_cfg=pruner_option("akr"))  # fmt: skip
    code = aggregate.main(["--results-dir", str(tmp_path), "--compare", "embedded_post_training",
                           "--wandb", "off"])  # fmt: skip
    assert code == 0
    md = (tmp_path / "tables" / "compare_embedded_post_training.md").read_text(encoding="utf-8")
    assert "conf/compare/embedded_post_training.yaml" in md and "`grid` (registered, 24" in md
    csv = pd.read_csv(tmp_path / "tables" / "compare_embedded_post_training.csv")
    assert "family" in csv and "seed_p_adjusted" in csv
