"""Effect tables (benchmark/reporting/effects.py): which records make a row, and the paired Δ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_stats import pruner_option, write_run

from benchmark.reporting import aggregate, effects
from benchmark.reporting.records import load_records

N = 40


def _run(tmp: Path, run_id: str, survive: int, wrong: int = 0, pruner: str = "akr",
         sparsity: float = 0.5, cfg: dict | None = None, **kw) -> None:  # fmt: skip
    """A record whose log has ``survive`` survivors and ``wrong`` misclassified examples (the
    last ones; they are skipped by the attack)."""
    full = {**pruner_option(pruner), **(cfg or {})}
    write_run(tmp, "e", run_id, pruner, sparsity, 0, None, n=N, attack="deepwordbug",
              extra_cfg=full, n_failed=survive, n_skipped=wrong, n_success=N - survive - wrong,
              aua=survive / N, attack_clean_acc=(N - wrong) / N, **kw)  # fmt: skip
    rows = []
    for i in range(N):
        label = i % 2
        pred = 1 - label if i >= N - wrong else label
        result = "skipped" if i >= N - wrong else ("failed" if i < survive else "successful")
        rows.append({"example_index": i, "label": label, "orig_pred": pred, "result": result})
    log = tmp / "runs" / "e" / f"{run_id}.attack.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def _spec(tmp: Path, rows: list[dict], **kw) -> dict:
    spec = {"experiment": "e", "seed": 0, "num_examples": N, "attacks": ["deepwordbug"],
            "sparsities": [0.5], "reference": "akr", "rows": rows, **kw}  # fmt: skip
    path = tmp / "fx.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return effects.load_spec(path)


ROWS = [{"id": "akr", "pruner": "akr"},
        {"id": "padding", "pruner": "akr", "set": {"calib_padding": "exclude"}},
        {"id": "bias", "pruner": "akr", "set": {"bias_prunable": False}}]  # fmt: skip


def test_a_row_is_the_current_defaults_with_its_switches_and_nothing_else(tmp_path) -> None:
    """The 2:4 record and one written under other defaults (obs_dtype float32) are no row's;
    the padding record is the padding row's, compared with the default record."""
    _run(tmp_path, "ref", survive=10)
    _run(tmp_path, "pad", survive=30, wrong=4, cfg={"calib_padding": "exclude"})
    _run(tmp_path, "n24", survive=40, cfg={"structure": "2:4"})
    _run(tmp_path, "f32", survive=40, cfg={"calib_padding": "exclude", "obs_dtype": "float32"})
    table, notes = effects.effects_table(load_records(tmp_path), _spec(tmp_path, ROWS))
    assert list(table["run_id"].fillna("not run")) == ["ref", "pad", "not run"]
    pad = table.iloc[1]
    assert pad["reference_run"] == "ref" and pad["n_pairs"] == N
    assert pad["delta_aua"] == pytest.approx(20 / N)
    # clean: the padding model is wrong on the last 4 sentences, the reference on none
    assert pad["delta_clean"] == pytest.approx(-4 / N) and pad["clean_n"] == N
    assert pad["clean_p"] == pytest.approx(0.125)  # exact McNemar, 0 vs 4 discordant
    assert notes == []


def test_match_rows_newest_record_and_missing_logs_are_said(tmp_path) -> None:
    """``match`` rows select by the listed keys only (versions); of two records of one
    configuration the newest is used and named; without a log there is no paired Δ."""
    rows = [{"id": "v1", "pruner": "lth", "match": {"version": 1}},
            {"id": "v2", "pruner": "lth", "match": {"version": 2}, "reference": "v1"}]  # fmt: skip
    _run(tmp_path, "old", survive=5, pruner="lth", cfg={"version": 1, "scope": "x"})
    _run(tmp_path, "new1", survive=7, pruner="lth", cfg={"version": 2},
         started_at="2026-01-01T00:00:00")  # fmt: skip
    _run(tmp_path, "new2", survive=9, pruner="lth", cfg={"version": 2},
         started_at="2026-02-01T00:00:00")  # fmt: skip
    spec = _spec(tmp_path, rows, reference=None)
    table, notes = effects.effects_table(load_records(tmp_path), spec)
    assert list(table["run_id"]) == ["old", "new2"]
    assert table.iloc[1]["delta_aua"] == pytest.approx(4 / N)
    assert any("newest of 2 records used (new2; also new1)" in t for t in notes)
    (tmp_path / "runs/e/old.attack.jsonl").unlink()
    table, notes = effects.effects_table(load_records(tmp_path), spec)
    assert table.iloc[1][["delta_aua", "delta_clean"]].isna().all()
    assert any("attack log missing (old)" in t for t in notes)


def test_markdown_shows_every_cell_and_the_cli_writes_it(tmp_path, monkeypatch) -> None:
    _run(tmp_path, "ref", survive=10)
    _run(tmp_path, "pad", survive=30, cfg={"calib_padding": "exclude"})
    spec = _spec(tmp_path, ROWS)
    table, notes = effects.effects_table(load_records(tmp_path), spec)
    md = effects.render_markdown(table, spec, notes)
    assert md.count("\n| 50% |") == 3 and "| not run |" in md
    assert "+50.00 [" in md  # Δ Aua of the padding row, in points
    monkeypatch.setattr(effects, "EFFECTS_DIR", tmp_path)
    assert aggregate.main(["--results-dir", str(tmp_path), "--effects", "fx"]) == 0
    assert (tmp_path / "tables/effects_fx.md").read_text() == md
    assert aggregate.main(["--results-dir", str(tmp_path), "--effects", "nope"]) == 2


def test_spec_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="reference 'missing' is not a row id"):
        _spec(tmp_path, [{"id": "a", "pruner": "akr", "reference": "missing"}], reference=None)
    with pytest.raises(ValueError, match="set or match, not both"):
        _spec(tmp_path, [{"id": "akr", "pruner": "akr", "set": {}, "match": {}}])
    with pytest.raises(ValueError, match="no effects spec 'nope'"):
        effects.load_spec("nope")


@pytest.mark.parametrize(
    "name",
    [
        "akr_official",
        "training_reduced_versions",
        "robustt_ablation_reduced",
        "official_defaults_reduced",
        "noise_floor",
    ]
    + [f"nm_{m}" for m in ("magnitude", "wanda", "sparsegpt", "akr")],
)
def test_committed_specs_load_and_name_existing_pruners(name) -> None:
    spec = effects.load_spec(name)
    for row in spec["rows"]:
        defaults = effects.pruner_defaults(row["pruner"])
        for key in {**row.get("set", {}), **row.get("match", {})}:
            assert key in defaults, f"{name}: {row['id']} sets {key}, not a {row['pruner']} key"


def test_a_note_shared_by_cells_of_a_row_is_said_once() -> None:
    """A dense-model mismatch under two attacks at two sparsities is one line; missing logs
    name every record once; cells with different attack sets are listed per sparsity."""
    msg = "dense model a, its reference's b"
    notes = [("v2", s, atk, msg, ()) for s in (0.3, 0.5) for atk in ("dwb", "tf")]
    notes += [("v2", 0.3, "dwb", "no paired Δ, attack log missing", ("r1", "x")),
              ("v2", 0.5, "dwb", "no paired Δ, attack log missing", ("r2", "x")),
              ("v2", 0.5, "tf", "no paired Δ, attack log missing", ("r3",))]  # fmt: skip
    assert effects.group_notes(notes) == [
        f"v2 at 0.3, 0.5 (dwb, tf): {msg}",
        "v2 at 0.3 (dwb), 0.5 (dwb, tf): no paired Δ, attack log missing (r1, x, r2, r3)",
    ]
