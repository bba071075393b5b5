"""The numerical noise floor (``dense_noise``, benchmark/models/noise.py): a perturbed dense
model is its own job, its own pruned-cache entry and its own table row, and an unset key
leaves every earlier run id as it was."""

from __future__ import annotations

import json

import pytest
import torch
from test_contract_cli import base_args, call, identity_of
from test_effects import N, _run, _spec

from benchmark.models.noise import check_dense_noise, perturb_weights
from benchmark.reporting import effects
from benchmark.reporting.records import load_records


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("noise")
    return {"results": base / "results", "cache": base / "cache", "base": base}


def test_perturbation_is_seeded_and_relative() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    w = layer.weight.detach().clone()
    info = perturb_weights(layer, 1e-6, 1)
    rel = (layer.weight.detach().double() - w.double()) / w.double()
    # a relative change of standard deviation 1e-6 (float32 rounding adds ~3e-8)
    assert 0.8e-6 < rel.std().item() < 1.2e-6 and info["max_rel_change"] < 1e-5
    assert info["n_params"] == 64 * 32 + 32 and info["seed"] == 1
    again, other = torch.nn.Linear(64, 32), torch.nn.Linear(64, 32)
    for m in (again, other):
        m.load_state_dict({"weight": w, "bias": layer.bias.detach() * 0 + 1})
    perturb_weights(again, 1e-6, 1)
    perturb_weights(other, 1e-6, 2)
    assert torch.equal(again.weight, layer.weight)  # the same seed, the same numbers
    assert not torch.equal(other.weight, layer.weight)
    assert (again.bias != 1).any()  # every floating-point parameter, biases too


@pytest.mark.parametrize(
    "bad",
    [
        {"scale": 0, "seed": 1},
        {"scale": 1e-6},
        {"scale": "x", "seed": 1},
        {"scale": 1e-6, "seed": -1},
        {"scale": 0.5, "seed": 1},
        3,
    ],
)
def test_bad_values_are_refused(bad) -> None:
    assert check_dense_noise(bad) is not None
    assert check_dense_noise(None) is None and check_dense_noise({"scale": 1e-6, "seed": 0}) is None


def test_unset_keeps_run_ids_and_set_makes_another_job(dirs) -> None:
    plain = identity_of(base_args(dirs))
    assert "dense_noise" not in plain.identity  # so run ids from before the key stay
    one = identity_of([*base_args(dirs), "dense_noise={scale:1e-6,seed:1}"])
    spelled = identity_of([*base_args(dirs), "dense_noise={scale:0.000001,seed:1}"])
    two = identity_of([*base_args(dirs), "dense_noise={scale:1e-6,seed:2}"])
    assert len({plain.run_id, one.run_id, two.run_id}) == 3 and spelled.run_id == one.run_id


def test_a_perturbed_job_prunes_its_own_model(dirs, caplog, capsys) -> None:
    """Same pruner, sparsity and seed: the perturbed job does not take the unperturbed job's
    pruned weights from the cache, and its record says what was done."""
    args = [*base_args(dirs), "pruner=magnitude", "attack=none"]
    assert call(args, caplog, capsys)[0] == 0
    assert call([*args, "dense_noise={scale:1e-6,seed:1}"], caplog, capsys)[0] == 0
    recs = [json.loads(p.read_text()) for p in sorted((dirs["results"] / "runs").rglob("*.json"))]
    by_noise = {bool(r["cfg"].get("dense_noise")): r for r in recs}
    plain, noisy = by_noise[False], by_noise[True]
    assert noisy["prune_info"]["key"] != plain["prune_info"]["key"]
    assert noisy["prune_info"]["cached"] is False
    assert noisy["dense_info"]["noise"]["scale"] == 1e-6 and "noise" not in plain["dense_info"]
    assert noisy["dense_info"]["key"] == plain["dense_info"]["key"]  # one cached fine-tune


def test_effects_rows_never_mix_perturbed_and_plain_records(tmp_path) -> None:
    noise = {"scale": 1e-6, "seed": 1}
    _run(tmp_path, "plain", survive=10)
    _run(tmp_path, "noisy", survive=14, started_at="2027-01-01T00:00:00")
    path = tmp_path / "runs/e/noisy.json"
    rec = json.loads(path.read_text())
    rec["cfg"]["dense_noise"] = noise
    path.write_text(json.dumps(rec))
    rows = [
        {"id": "akr", "pruner": "akr"},
        {"id": "akr_n1", "pruner": "akr", "dense_noise": noise, "reference": "akr"},
    ]
    table, notes = effects.effects_table(load_records(tmp_path), _spec(tmp_path, rows))
    # the newer perturbed record is not taken for the plain row
    assert list(table["run_id"]) == ["plain", "noisy"] and notes == []
    assert table.iloc[1]["delta_aua"] == pytest.approx(4 / N)


def test_a_row_may_sit_at_its_own_sparsity(tmp_path) -> None:
    _run(tmp_path, "old_dense", survive=11, pruner="none", sparsity=0.0)
    _run(tmp_path, "dense", survive=12, pruner="none", sparsity=0.0, started_at="2027-01-01")
    _run(tmp_path, "half", survive=10)
    rows = [
        {"id": "dense", "pruner": "none", "sparsity": 0.0, "match": {}},
        {"id": "akr", "pruner": "akr", "reference": "dense"},
    ]
    table, notes = effects.effects_table(load_records(tmp_path), _spec(tmp_path, rows))
    assert list(table["run_id"]) == ["dense", "half"]
    assert any(n.startswith("dense at 0 ") and "old_dense" in n for n in notes)  # its sparsity
    assert list(table["sparsity"]) == [0.0, 0.5]
    assert table.iloc[1]["delta_aua"] == pytest.approx(-2 / N)


def test_a_sweep_over_dict_values_is_checked_on_its_first_element() -> None:
    """``-m 'dense_noise={...},{...}'``: the up-front composition check takes one element (it
    used to pass the whole sweep on, and Hydra refused it as ambiguous)."""
    from benchmark.run import _first_values

    args = ["dense_noise={scale:1e-6,seed:1},{scale:1e-6,seed:2}", "sparsity=0.3,0.5",
            "attack.recipes=[pwws,deepwordbug]", "exp_name='a,b'"]  # fmt: skip
    assert _first_values(args) == ["dense_noise={scale:1e-6,seed:1}", "sparsity=0.3",
                                   "attack.recipes=[pwws,deepwordbug]", "exp_name='a,b'"]  # fmt: skip


def test_noise_records_stay_out_of_every_table_but_the_effects(tmp_path) -> None:
    """A perturbed record is not a second seed-0 record of its cell: the frame the paper
    tables, summaries, comparisons and claims read has none; the effects read them all."""
    from test_stats import write_run

    from benchmark.reporting.records import without_noise

    write_run(tmp_path, "a", "plain", "magnitude", 0.5, 0, [1, 2])
    write_run(tmp_path, "a", "noisy", "magnitude", 0.5, 0, [1, 2, 3])
    path = tmp_path / "runs/a/noisy.json"
    rec = json.loads(path.read_text())
    rec["cfg"]["dense_noise"] = {"scale": 1e-6, "seed": 1}
    path.write_text(json.dumps(rec))
    everything = load_records(tmp_path)
    assert set(everything["run_id"]) == {"plain", "noisy"}
    assert list(without_noise(everything)["run_id"]) == ["plain"]
    from benchmark.reporting import aggregate

    assert aggregate.main(["--results-dir", str(tmp_path), "--summary", "a", "--wandb", "off"]) == 0
    summary = (tmp_path / "tables/summary_a.csv").read_text()
    assert "dense_noise" not in summary and len(summary.strip().splitlines()) == 2
