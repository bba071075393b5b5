"""AKR's default solver: ``compiled`` unless a preset pins another through its protocol.

The switch must not orphan a committed record: the presets whose AKR rows ran the ``lowrank``
reference (``embedded_post_training``, and ``owl_akr``'s base in ``embedded_beyond``) pin it
with ``protocol.akr_obs_impl``, and a wrapper's base resolves beside the job's protocol both in
the run identity (``pruner_base``) and in the pruner that runs. On a GPU the compiled (numba,
CPU) kernel is replaced by the batched one, and the record names the kernel that ran.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.jobs import plan as planner
from benchmark.pruners.akr import obs_kernel


@pytest.fixture(scope="module", autouse=True)
def _resolvers():
    planner._register_resolvers()


def _job(*overrides: str):
    return planner.identify([*overrides, "attack=none", "sparsity=0.5"])


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("embedded_agnews", "compiled"), ("embedded_imdb", "compiled"),
     ("akr_table1", "compiled"), ("embedded_post_training", "lowrank")],
)  # fmt: skip
def test_default_solver_per_preset(preset, expected):
    assert _job(f"experiment={preset}", "pruner=akr").resolved["pruner"]["obs_impl"] == expected


def test_plain_default_and_explicit_override():
    assert _job("pruner=akr").resolved["pruner"]["obs_impl"] == "compiled"
    pinned = _job("experiment=embedded_post_training", "pruner=akr", "pruner.obs_impl=compiled")
    assert pinned.resolved["pruner"]["obs_impl"] == "compiled"  # a command line still wins


def test_explicit_default_is_the_same_job():
    """A record run with ``pruner.obs_impl=compiled`` named is the plain default job."""
    plain = _job("experiment=embedded_agnews", "pruner=akr")
    named = _job("experiment=embedded_agnews", "pruner=akr", "pruner.obs_impl=compiled")
    assert plain.run_id == named.run_id
    lowrank = _job("experiment=embedded_agnews", "pruner=akr", "pruner.obs_impl=lowrank")
    assert lowrank.run_id != plain.run_id


def test_wrapper_base_follows_the_preset_protocol():
    beyond = _job("experiment=embedded_beyond", "pruner=owl_akr")
    plain = _job("pruner=owl_akr")
    assert beyond.identity["pruner_base"]["obs_impl"] == "lowrank"
    assert plain.identity["pruner_base"]["obs_impl"] == "compiled"
    assert beyond.resolved["pruner"]["base_overrides"] == {}  # the wrapper's own config is as is


def test_wrapper_runs_the_base_of_its_identity():
    """The OWL object built for the job runs the base solver its identity names."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from benchmark.jobs.build import build_job

    for preset, expected in (("embedded_beyond", "lowrank"), ("embedded_agnews", "compiled")):
        overrides = [f"experiment={preset}", "pruner=owl_akr", "attack=none", "sparsity=0.5"]
        ident = planner.identify(overrides)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(planner.ROOT / "conf"), version_base="1.3"):
            full = compose("run", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(full)
            cfg = compose("run", overrides=overrides)
            job, _ = build_job(cfg, dict(full.hydra.runtime.choices), ident)
        assert job.pruner.base.obs_impl == expected == ident.identity["pruner_base"]["obs_impl"]


def test_kernel_per_device():
    assert obs_kernel("compiled", torch.device("cpu")) == "compiled"
    assert obs_kernel("compiled", torch.device("cuda", 0)) == "batched"
    for impl in ("lowrank", "blocked", "batched", "full"):
        assert obs_kernel(impl, torch.device("cuda")) == impl
        assert obs_kernel(impl, "cpu") == impl


def test_reports_take_the_default_and_pinned_solvers_as_default_rows():
    """The tables' and claims' "default row" of AKR: the fallback solver (compiled) and the one a
    preset pins for its committed rows (lowrank) both are; any other (blocked) is a variant."""
    import json

    from benchmark.records.staleness import option_file
    from benchmark.reporting.records import is_default_pruner, option_defaults, pruner_is

    option = option_file("pruner", "akr")
    assert set(option_defaults(option)["obs_impl"]) == {"compiled", "lowrank"}
    resolved = _job("pruner=akr").resolved["pruner"]

    def identity(**pruner):
        return json.dumps({"pruner": {**resolved, **pruner}, "_record": {"pruner": "akr"}})

    assert is_default_pruner(identity(obs_impl="compiled"))
    assert is_default_pruner(identity(obs_impl="lowrank"))
    assert not is_default_pruner(identity(obs_impl="blocked"))
    assert not is_default_pruner(identity(obs_impl="compiled", nsamples=64))
    sst2 = identity(obs_impl="compiled", calibration="sst2")
    assert pruner_is(sst2, "akr", (("calibration", "sst2"),)) and not is_default_pruner(sst2)
    assert not pruner_is(identity(obs_impl="blocked", calibration="sst2"), "akr",
                         (("calibration", "sst2"),))  # fmt: skip


def test_effects_rows_take_the_pinned_solver_as_default():
    from benchmark.reporting.effects import row_matches

    pcfg = _job("pruner=akr").resolved["pruner"]
    row = {"pruner": "akr"}
    for impl, expected in (("compiled", True), ("lowrank", True), ("blocked", False)):
        assert row_matches(row, {**pcfg, "obs_impl": impl}, {"obs_workers"}) is expected, impl
    assert row_matches({"pruner": "akr", "set": {"obs_impl": "blocked"}},
                       {**pcfg, "obs_impl": "blocked"}, {"obs_workers"})  # fmt: skip
