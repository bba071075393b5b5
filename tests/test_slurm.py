"""A 2-job sweep through the submitit Slurm launcher on a real single-node Slurm.

The module fixture runs ``scripts/slurm_local.sh start``: it installs Debian's ``slurm-wlm``
and ``munge`` with apt-get if missing, starts munged, slurmctld and slurmd with a private
config, and waits for the node to be idle; the daemons are stopped afterwards (unless they
were already running before the test, then they are left as found). The test is skipped,
with the reason printed, only where that fails: not root, no apt-get, no package, a daemon
that does not come up.

The sweep (tiny BERT, magnitude pruning at two sparsities, no attack) runs with
``hydra/launcher=slurm_local``; everything it writes is under ``tmp_path``. Checked: both
records ``ok``; each task ran as a Slurm array task (submitit's log names its Slurm job id,
Slurm's job-completion log lists it ``COMPLETED``); the submitit folder is inside the
sweep folder under ``paths.log_dir``; no ``.submitit`` folder in the cwd or the repo.
A quick test without Slurm checks the same folder rule on the composed launcher configs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
SLURM_DIR = Path(os.environ.get("RPB_SLURM_DIR", "/tmp/rpb-slurm"))


def _say(config: pytest.Config, line: str) -> None:
    """A line on the terminal whatever the capture and verbosity (skip reasons included)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"[test_slurm] {line}")


def _script(cmd: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "RPB_SLURM_DIR": str(SLURM_DIR)}
    return subprocess.run(["bash", str(SCRIPT), cmd], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def slurm(request):
    """A running single-node cluster: yields its ``SLURM_CONF``; stops what it started."""

    def skip(why: str) -> None:
        _say(request.config, f"skipped: {why}")
        pytest.skip(why)

    if sys.platform != "linux":
        skip(f"a local Slurm needs Linux (this is {sys.platform})")
    already = _script("status", 60).returncode == 0
    t0 = time.monotonic()
    try:
        out = _script("start", 900)
    except subprocess.TimeoutExpired:
        skip("scripts/slurm_local.sh start did not finish within 900 s")
    lines = out.stderr.strip().splitlines()
    if out.returncode != 0:
        skip(f"Slurm could not be installed or started: {'; '.join(lines[-4:])}")
    _say(request.config, f"slurm_local.sh start: {time.monotonic() - t0:.1f} s")
    for line in lines:
        _say(request.config, line)
    yield SLURM_DIR / "slurm.conf"
    if already:
        _say(request.config, "the cluster was running before the test: left running")
        return
    done = _script("stop", 120)
    assert done.returncode == 0, done.stderr
    for line in done.stderr.strip().splitlines():
        _say(request.config, line)


def _env(slurm_conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               SLURM_CONF=str(slurm_conf))  # fmt: skip
    return env


def _jobcomp(array_id: str) -> dict[str, str]:
    """Slurm's job-completion log (jobcomp/filetxt): array task id -> JobState."""
    path = SLURM_DIR / "log" / "jobcomp.txt"
    text = path.read_text() if path.is_file() else ""
    return {m.group(2): m.group(1) for m in re.finditer(
        rf"JobState=(\S+) .*?ArrayJobId={array_id} ArrayTaskId=(\d+)", text)}  # fmt: skip


@pytest.mark.slow
def test_two_job_sweep_on_real_slurm(slurm: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    logs = tmp_path / "logs"
    repo_sweeps = ROOT / "logs" / "multiruns" / "smoke"
    before = set(repo_sweeps.iterdir()) if repo_sweeps.is_dir() else set()
    cmd = [sys.executable, "-m", "benchmark.run", "-m", "experiment=smoke", "dense.epochs=2",
           "attack=none", "progress=false", "sparsity=0.3,0.5", "hydra/launcher=slurm_local",
           f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}",
           f"paths.log_dir={logs}"]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=_env(slurm), capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    print(f"\nsweep through Slurm: {time.monotonic() - t0:.1f} s, rc {done.returncode}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in (done.stdout + done.stderr).splitlines():  # the launcher's lines, no sacct noise
        if "[HYDRA]" in line and "sacct" not in line:
            print(line)

    runs = tmp_path / "results" / "runs" / "smoke"
    recs = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    assert sorted(r["sparsity_target"] for r in recs) == [0.3, 0.5]
    assert all(r["status"] == "ok" for r in recs)

    # Hydra's sweep folder and submitit's folder follow paths.log_dir.
    (sweep,) = (logs / "multiruns" / "smoke").iterdir()
    folder = sweep / ".submitit"
    outs = sorted(folder.glob("*_*/*_0_log.out"))
    assert len(outs) == 2, sorted(p.relative_to(sweep) for p in folder.rglob("*"))
    array_id = outs[0].parent.name.split("_")[0]
    assert array_id.isdigit()
    for task, out in enumerate(outs):  # submitit inside a Slurm array task
        assert out.parent.name == f"{array_id}_{task}"
        log_text = out.read_text()
        assert f"JobEnvironment(job_id={array_id}_{task}," in log_text, log_text[-2000:]
        assert "Job completed successfully" in log_text
        hydra_yaml = (sweep / str(task) / ".hydra" / "hydra.yaml").read_text()
        assert re.search(rf"^\s+id: '?{array_id}_{task}'?$", hydra_yaml, re.M)  # hydra.job.id
    assert (folder / array_id / f"{array_id}_submission.sh").is_file()
    print(f"submitit folder: {folder}")
    print(outs[0].read_text().splitlines()[0])

    # Slurm's own account of the two array tasks (the job-completion log follows job exit).
    deadline = time.monotonic() + 30
    while _jobcomp(array_id) != {"0": "COMPLETED", "1": "COMPLETED"}:
        assert time.monotonic() < deadline, _jobcomp(array_id)
        time.sleep(0.5)
    line = next(x for x in (SLURM_DIR / "log" / "jobcomp.txt").read_text().splitlines()
                if f"ArrayJobId={array_id} " in x)  # fmt: skip
    print("jobcomp:", " ".join(f for f in line.split() if f.split("=")[0] in (
        "JobId", "JobState", "Partition", "NodeList", "Tres", "ArrayJobId", "ArrayTaskId",
        "StartTime", "EndTime")))  # fmt: skip

    # No stray submitit folders: not in the cwd, not in the repo, nothing new in <repo>/logs.
    assert not (cwd / ".submitit").exists() and list(cwd.iterdir()) == []
    assert not (ROOT / ".submitit").exists()
    assert not list(tmp_path.rglob("*%j*"))  # an unexpanded submitit folder name
    after = set(repo_sweeps.iterdir()) if repo_sweeps.is_dir() else set()
    assert after == before


@pytest.mark.slow
def test_scancel_sigterm_leaves_a_failed_record(slurm: Path, tmp_path: Path) -> None:
    """``scancel --signal=TERM`` (what Slurm sends at a time limit) during a job run by the
    submitit worker, where ``main()`` never ran: the job's record says it was terminated."""
    logs, results = tmp_path / "logs", tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmark.run", "-m", "experiment=smoke", "dense.epochs=400",
           "attack=none", "progress=false", "sparsity=0.3", "hydra/launcher=slurm_local",
           f"paths.results_dir={results}", f"paths.cache_dir={tmp_path / 'cache'}",
           f"paths.log_dir={logs}"]  # fmt: skip
    env = _env(slurm)
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        job = None
        while job is None:  # the job id, once the fine-tune is under way
            assert time.monotonic() < deadline, "the job never started training"
            for out in logs.rglob("*_0_log.out"):
                text = out.read_text()
                m = re.search(r"JobEnvironment\(job_id=(\d+)", text)
                if m and "fine-tuning" in (out.with_name(out.name.replace(".out", ".err"))
                                           .read_text(errors="replace") + text):  # fmt: skip
                    job = m.group(1)
            time.sleep(1)
        subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)
        records = results / "runs" / "smoke"
        while not list(records.glob("*.json")):
            assert time.monotonic() < deadline, "no record after SIGTERM"
            time.sleep(1)
        time.sleep(1)  # the record is written atomically; let the worker finish
        (rec,) = [json.loads(p.read_text()) for p in records.glob("*.json")]
        assert rec["status"] == "failed"
        assert "JobTerminated" in rec["error"] and "SIGTERM" in rec["error"]
        print(f"\nscancel --signal=TERM {job}: record {rec['run_id']}: {rec['error']}")
    finally:
        sweep.kill()
        sweep.wait(30)
        subprocess.run(["scancel", "--full", job or "0"], env=env, check=False)


@pytest.mark.parametrize("launcher", ["slurm", "slurm_local"])
def test_submitit_folder_follows_log_dir(launcher: str, tmp_path: Path) -> None:
    """Without Slurm: submitit's folder resolves inside the sweep folder under paths.log_dir."""
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    from benchmark.run import ROOT as RUN_ROOT

    setup_globals()  # Hydra's ${now:} resolver
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(RUN_ROOT))
    overrides = ["experiment=smoke", f"hydra/launcher={launcher}", f"paths.log_dir={tmp_path}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=overrides, return_hydra_config=True)
    folder = Path(cfg.hydra.launcher.submitit_folder)
    assert folder.parent.parent == Path(cfg.hydra.sweep.dir)
    assert folder.parts[-2:] == (".submitit", "%j")
    assert Path(cfg.hydra.sweep.dir).parent == tmp_path / "multiruns" / "smoke"
    assert Path(cfg.hydra.run.dir).parent == tmp_path / "runs" / "smoke"
    if launcher == "slurm_local":
        launch = cfg.hydra.launcher
        assert (launch.partition, launch.gpus_per_node, launch.cpus_per_task) == ("debug", None, 1)
