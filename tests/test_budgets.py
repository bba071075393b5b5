"""Training budgets (conf/budget, conf/pruner_budget): budget=reduced caps the training-based
pruners through one file per pruner, a pruner that trains but has no file for the chosen
budget fails instead of silently training with the paper's budget, and the budget's name is
not part of the run id (its values are, through the pruner config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from benchmark.errors import UserError
from benchmark.jobs.build import check_budget
from benchmark.records.store import run_id_of

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from benchmark.run import ROOT as RUN_ROOT

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(RUN_ROOT))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("run", overrides=list(overrides), return_hydra_config=True)


def _trains(pruner: str) -> bool:
    raw = yaml.safe_load((CONF / "pruner" / f"{pruner}.yaml").read_text())
    return any(str(k).endswith("max_steps") for k in raw)


TRAINING = sorted(p.stem for p in (CONF / "pruner").glob("*.yaml") if _trains(p.stem))


def test_training_pruners_are_the_expected_ones():
    assert set(TRAINING) == {
        "imp", "imp_freelb", "lth", "lth_freelb", "randmask", "rticket", "rticket_no_adv",
        "rticket_no_mask_learning", "seven",
    }  # fmt: skip


@pytest.mark.parametrize("pruner", TRAINING)
def test_every_training_pruner_has_a_reduced_budget_that_caps_it(pruner):
    paper = _compose(f"pruner={pruner}")
    reduced = _compose(f"pruner={pruner}", "budget=reduced")
    assert paper.budget.name == "paper" and reduced.budget.name == "reduced"
    caps = yaml.safe_load((CONF / "pruner_budget" / f"{pruner}_reduced.yaml").read_text())
    assert caps, "empty budget file"
    for key, value in caps.items():
        assert key in paper.pruner, f"{key} is not a {pruner} hyper-parameter"
        assert reduced.pruner[key] == value
    steps = {k: v for k, v in caps.items() if k.endswith("max_steps")}
    assert steps and all(paper.pruner[k] is None and 0 < v <= 400 for k, v in steps.items())
    # everything the budget file does not name is the paper's value
    rest = {k for k in paper.pruner if k not in caps}
    assert all(paper.pruner[k] == reduced.pruner[k] for k in rest)


def test_post_training_pruners_ignore_the_budget():
    paper = _compose("pruner=akr")
    reduced = _compose("pruner=akr", "budget=reduced")
    assert paper.pruner == reduced.pruner
    check_budget(reduced, dict(reduced.hydra.runtime.choices))  # nothing to cap: no error


def test_missing_budget_file_for_a_training_pruner_is_an_error():
    cfg = _compose("pruner=seven")
    choices = {"pruner": "seven", "budget": "tiny", "pruner_budget": None}
    with pytest.raises(UserError, match=r"conf/pruner_budget/seven_tiny\.yaml"):
        check_budget(cfg, choices)
    check_budget(cfg, {"pruner": "seven", "budget": "paper", "pruner_budget": None})


def test_budget_name_is_not_identity_but_its_values_are():
    paper = OmegaConf.to_container(_compose("pruner=seven"), resolve=False)
    reduced = OmegaConf.to_container(_compose("pruner=seven", "budget=reduced"), resolve=False)
    for cfg in (paper, reduced):
        cfg.pop("hydra")
    renamed = {**paper, "budget": {"name": "renamed"}}
    assert run_id_of(renamed) == run_id_of(paper)
    assert run_id_of(reduced) != run_id_of(paper)


def test_reduced_preset_selects_the_reduced_budget():
    cfg = _compose("experiment=embedded_training_reduced", "pruner=rticket")
    assert cfg.budget.name == "reduced" and cfg.pruner.mask_max_steps == 150
    assert cfg.hydra.runtime.choices.pruner_budget == "rticket_reduced"


def test_leaderboard_keeps_budgets_apart(tmp_path):
    import json

    from benchmark.reporting.leaderboard import leaderboard
    from benchmark.reporting.records import load_records

    base = {"status": "ok", "model": "m", "dataset": "d", "pruner": "seven", "attack": "a",
            "sparsity_target": 0.5, "seed": 0, "clean_acc": 0.5}  # fmt: skip
    runs = tmp_path / "runs" / "e"
    runs.mkdir(parents=True)
    for i, (budget, acc) in enumerate([("paper", 0.9), ("reduced", 0.6), (None, 0.8)]):
        cfg = {"choices": {"dense": "finetune"}}
        if budget:
            cfg["budget"] = {"name": budget}
        rec = {**base, "run_id": f"r{i}", "clean_acc": acc, "cfg": cfg}
        (runs / f"r{i}.json").write_text(json.dumps(rec))
    board = leaderboard(load_records(tmp_path)).set_index("budget")
    # records written before budgets existed were trained with the paper's budget
    assert board.loc["paper", "n"] == 2 and board.loc["reduced", "n"] == 1
    assert board.loc["reduced", "clean_acc_mean"] == 0.6


def test_randmask_reduced_early_stopping_cannot_end_a_stage_early():
    """Official: patience 100 evaluations x 50 steps, about half of a 10-epoch stage. The reduced
    budget keeps that proportion: no stage can stop before half of its 200-step cap (patience 5
    x eval_every 5 could stop one at step 30)."""
    paper = _compose("pruner=randmask").pruner
    reduced = _compose("pruner=randmask", "budget=reduced").pruner
    assert paper.patience == 100 and paper.eval_every == 50 and paper.stage_epochs == 10
    earliest_stop = reduced.eval_every * (1 + reduced.patience)  # best at the first evaluation
    assert earliest_stop > 50 and earliest_stop >= reduced.stage_max_steps / 2
    assert reduced.candidate_max_steps >= reduced.eval_every * reduced.eval_last


@pytest.mark.parametrize("pruner", ["rticket", "rticket_no_adv", "rticket_no_mask_learning"])
def test_robustt_score_lr_is_the_official_one_per_dataset(pruner):
    """RobustT's stage-2 script searches AG News at lr 0.05 and IMDB/SST-2 at 0.1
    (stage2-search-ticket.sh:29, :11, :47): the resolved config says so, as
    ``--cfg job --resolve --package pruner`` shows it; a user's value wins."""
    lr = {d: _compose(f"pruner={pruner}", f"dataset={d}").pruner.mask_lr
          for d in ("agnews", "imdb", "sst2")}  # fmt: skip
    assert lr == {"agnews": 0.05, "imdb": 0.1, "sst2": 0.1}
    preset = _compose("experiment=robustt_table1", f"pruner={pruner}", "dataset=agnews")
    assert preset.pruner.mask_lr == 0.05  # a preset's own protocol table keeps the root's
    assert (
        _compose(f"pruner={pruner}", "dataset=agnews", "pruner.mask_lr=0.2").pruner.mask_lr == 0.2
    )
