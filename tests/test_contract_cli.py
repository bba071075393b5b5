"""The input and fault contract of ``python -m benchmark.run`` (README, "The contract").

One table of bad inputs (each: the extra arguments, the exit code, a fragment of the one line
printed, and no traceback), run in-process through ``benchmark.run.main`` where the CLI path
is not itself under test; data-loss and fault cases run the real CLI in subprocesses and kill
them (SIGINT, SIGTERM, SIGKILL), then check the records and logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("contract")
    return {"results": base / "results", "cache": base / "cache", "base": base}


def base_args(dirs, exp="contract"):
    return [
        "experiment=smoke",
        f"paths.results_dir={dirs['results']}",
        f"paths.cache_dir={dirs['cache']}",
        "progress=false",
        f"exp_name={exp}",
    ]


def call(args, caplog, capsys):
    """``python -m benchmark.run ARGS`` in this process; (exit code, all it printed)."""
    from benchmark import run

    caplog.clear()
    capsys.readouterr()
    # handlers of an earlier call write to streams that are closed now
    for name in (None, "benchmark.run", "benchmark", "hydra"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if h is not caplog.handler and not isinstance(h, type(caplog.handler)):
                lg.removeHandler(h)
    old = sys.argv
    sys.argv = ["benchmark.run", *args]
    try:
        with caplog.at_level(logging.INFO):
            run.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, caplog.text + out.out + out.err


def write_csv(folder: Path, rows, name="train.csv", header="text,label", raw: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


# (id, extra args, exit code, fragment of the error line)
BAD_INPUT = [
    ("typo-top-level", ["sparsty=0.5"], 2, "unknown config key 'sparsty' (did you mean sparsity?)"),
    (
        "typo-appended",
        ["+sparsty=0.7"],
        2,
        "unknown config key 'sparsty' (did you mean 'sparsity'?)",
    ),
    ("unknown-top-level", ["+foo=1"], 2, "unknown config key 'foo'"),
    ("nested-typo", ["pruner=wanda", "pruner.nsampels=64"], 2, "did you mean pruner.nsamples?"),
    ("nested-typo-appended", ["+pruner.nsampels=64"], 2, "unknown key pruner.nsampels"),
    ("seed-float", ["seed=1.5"], 2, "seed=1.5: expected a non-negative integer"),
    ("seed-text", ["seed=abc"], 2, "seed='abc'"),
    ("seed-negative", ["seed=-1"], 2, "seed=-1"),
    ("sparsity-one", ["sparsity=1.0"], 2, "sparsity must be in [0, 1)"),
    ("sparsity-text", ["sparsity=half"], 2, "sparsity must be a number"),
    ("exp-parent", ["exp_name=../x"], 2, "plain name"),
    ("exp-absolute", ["exp_name=/tmp/x"], 2, "plain name"),
    ("exp-nested", ["exp_name=a/b"], 2, "plain name"),
    ("exp-empty", ["exp_name="], 2, "plain name"),
    ("eval-batch-zero", ["eval_batch_size=0"], 2, "eval_batch_size=0: expected a positive integer"),
    ("max-eval-negative", ["max_eval_examples=-3"], 2, "max_eval_examples=-3"),
    ("num-examples-text", ["attack.num_examples=abc"], 2, "attack.num_examples='abc'"),
    ("num-examples-negative", ["attack.num_examples=-1"], 2, "attack.num_examples=-1"),
    ("nsamples-negative", ["pruner=wanda", "pruner.nsamples=-1"], 2, "pruner.nsamples=-1"),
    ("max-length-zero", ["dataset.max_length=0"], 2, "dataset.max_length=0"),
    ("logger-mode", ["logger=wandb", "logger.mode=bogus"], 2, "logger.mode='bogus'"),
    ("device-unknown", ["device=tpu"], 2, "device='tpu'"),
    ("time-limit-zero", ["attack.max_seconds_per_example=0"], 2, "max_seconds_per_example=0"),
    ("unknown-pruner", ["pruner=magnitde"], 2, "did you mean 'magnitude'?"),
    ("unknown-launcher", ["hydra/launcher=jobib"], 2, "did you mean 'joblib'?"),
    ("bool-text", ["force=maybe"], 2, "force='maybe'"),
    ("sweep-without-m", ["sparsity=0.3,0.5"], 2, "use -m for a sweep"),
    ("config-dir-missing", ["--config-dir", "/nonexistent-rpb"], 2, "does not exist"),
    ("config-dir-file", ["--config-dir", str(ROOT / "README.md")], 2, "is a file, not a folder"),
    ("exp-name-too-long", ["exp_name=" + "x" * 240], 2, "at most 200 bytes"),
    (
        "nm-wrong-sparsity",
        ["pruner=wanda", "pruner.structure=2:4", "sparsity=0.7"],
        2,
        "implies sparsity 0.5",
    ),
    ("nm-not-a-structure", ["pruner=wanda", "pruner.structure=2-4"], 2, "'unstructured' or"),
    ("precision-unknown", ["precision=int8"], 2, "precision='int8'"),
    ("float16-on-cpu", ["precision=float16", "device=cpu"], 2, "float16 needs a GPU"),
    (
        "calibration-unknown",
        ["pruner=wanda", "pruner.calibration=imdb2"],
        2,
        "pruner.calibration='imdb2'",
    ),
    ("eval-sample-zero", ["eval_sample=0"], 2, "eval_sample=0"),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line(case, dirs, caplog, capsys):
    _, extra, code, fragment = case
    rc, text = call([*base_args(dirs, "bad"), *extra], caplog, capsys)
    assert rc == code, text
    assert fragment in text, text
    assert "Traceback" not in text
    assert not (dirs["results"] / "runs" / "bad").exists() or not list(
        (dirs["results"] / "runs" / "bad").glob("*.json")
    )  # no work, no record


@pytest.mark.parametrize(
    "bad",
    [
        ("not-int-label", ["a b,one"], "label 'one' is not an integer"),
        ("ragged", ["a b,1,extra"], "3 fields, the header has 2"),
        ("out-of-range", ["a b,1", "c d,2"], "outside [0, 2)"),
        ("empty", [], "has no examples"),
        ("no-header", None, "must have a header with columns text,label"),
        ("not-utf8", b"text,label\n\xff\xfe bad,1\n", "not UTF-8"),
    ],
    ids=lambda b: b[0],
)
def test_local_data_is_validated(bad, dirs, caplog, capsys, tmp_path):
    _, rows, fragment = bad
    folder = tmp_path / "data" / "sst2"
    good = ["good movie,1", "bad movie,0"]
    write_csv(folder, good, "validation.csv")
    if isinstance(rows, bytes):
        write_csv(folder, None, raw=rows)
    elif rows is None:
        write_csv(folder, ["x,1"], header="sentence,y")
    else:
        write_csv(folder, rows)
    rc, text = call(
        [
            *base_args(dirs, "data"),
            "dataset=sst2",
            "dataset.max_length=16",
            f"paths.data_dir={tmp_path / 'data'}",
            "attack=none",
        ],
        caplog,
        capsys,
    )
    assert rc == 2, text
    assert fragment in text and "train.csv" in text, text
    assert "Traceback" not in text


def test_bom_and_long_fields_are_accepted(tmp_path):
    from benchmark.data.loading import DatasetSpec, load_split

    folder = tmp_path / "d" / "x"
    long_text = "word " * 40000  # beyond csv's default 128 KiB field limit
    write_csv(folder, None, raw=(f'\ufefftext,label\n"{long_text}",1\nshort,0\n').encode())
    rows = load_split(DatasetSpec(name="x", num_labels=2), "train", str(tmp_path / "d"))
    assert [y for _, y in rows] == [1, 0] and len(rows[0][0]) == len(long_text)


def test_num_labels_must_match_the_training_split(tmp_path):
    from benchmark.data.loading import DatasetSpec, split_warnings
    from benchmark.errors import UserError

    spec = DatasetSpec(name="x", num_labels=3)
    with pytest.raises(UserError, match="num_labels=3"):
        split_warnings([("a", 0), ("b", 1)], spec, "train")
    one = split_warnings([("a", 1), ("b", 1)], DatasetSpec(name="x", num_labels=2), "validation")
    assert one and "one class only" in one[0]
    with pytest.raises(UserError, match=r"1 class but dataset\.num_labels=2"):  # not a warning
        split_warnings([("a", 1), ("b", 1)], DatasetSpec(name="x", num_labels=2), "train")


# ------------------------------------------------------------- identity (in-process)


def identity_of(args):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from benchmark.jobs.build import job_identity

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        choices = dict(
            compose("run", overrides=args, return_hydra_config=True).hydra.runtime.choices
        )
        cfg = compose("run", overrides=args)
    return job_identity(cfg, choices)


def test_sparsity_spelling_is_one_job(dirs):
    a = identity_of([*base_args(dirs), "sparsity=0"])
    b = identity_of([*base_args(dirs), "sparsity=0.0"])
    assert a.run_id == b.run_id


def test_data_content_is_identity(dirs, tmp_path):
    rows = ["good movie,1", "bad movie,0", "fine film,1"]
    flipped = ["good movie,0", "bad movie,1", "fine film,0"]
    for name, r in (("clean", rows), ("flipped", flipped)):
        write_csv(tmp_path / name / "sst2", r)
        write_csv(tmp_path / name / "sst2", rows, "validation.csv")
    write_csv(tmp_path / "copy" / "sst2", rows)
    write_csv(tmp_path / "copy" / "sst2", rows, "validation.csv")
    ids = {n: identity_of([*base_args(dirs), "dataset=sst2", f"paths.data_dir={tmp_path / n}"])
           for n in ("clean", "flipped", "copy")}  # fmt: skip
    assert ids["clean"].run_id != ids["flipped"].run_id  # same folder names, other labels
    assert ids["clean"].run_id == ids["copy"].run_id  # same bytes elsewhere: same job
    src = ids["flipped"].identity["data_source"]
    assert src["kind"] == "local" and set(src["files"]) == {"train", "validation"}


def test_cache_keys_follow_the_code(tmp_path, monkeypatch):
    from benchmark.records import identity

    pkg = tmp_path / "benchmark"
    (pkg / "pruners").mkdir(parents=True)
    (pkg / "pruners" / "mine.py").write_text("from benchmark.pruners.shared import f\n")
    (pkg / "pruners" / "shared.py").write_text("def f():\n    return 1\n")
    monkeypatch.setattr(identity, "PACKAGE_ROOT", pkg)
    before = identity.source_hash("benchmark.pruners.mine")
    (pkg / "pruners" / "shared.py").write_text("def f():\n    return 2\n")  # a shared module
    assert identity.source_hash("benchmark.pruners.mine") != before


# ------------------------------------------------------------- data loss and faults (CLI)


def cli(args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "benchmark.run", *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600, **kw)  # fmt: skip
    out.stderr = out.stdout  # Hydra logs to stdout, early errors go to stderr: read both
    return out


def _default_sigint() -> None:
    # A test run started in the background (`pytest ... &` from a script) has SIGINT ignored,
    # and a child inherits SIG_IGN: Python then installs no KeyboardInterrupt handler and the
    # job would never see the test's Ctrl-C. The child gets the default disposition back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )


def wait_for_lines(path: Path, n: int, proc, timeout=300.0) -> None:
    start = time.time()
    while time.time() - start < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"job ended before {n} log lines: {proc.stdout.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the attack log")


def slow_attack(dirs, exp):
    # all 32 evaluation sentences, so the attack is still running when the test kills it
    return [*base_args(dirs, exp), "attack.num_examples=0"]


@pytest.fixture(scope="module")
def finished(dirs):
    """One finished job (ok record and its attack log), shared by the data-loss cases."""
    out = cli([*slow_attack(dirs, "done")])
    assert out.returncode == 0, out.stderr[-3000:]
    runs = dirs["results"] / "runs" / "done"
    rec = next(p for p in runs.glob("*.json") if not p.name.endswith(".failed.json"))
    return rec, rec.with_name(rec.stem + ".attack.jsonl.gz")


def _rows(path: Path):
    from benchmark.records.logs import read_rows

    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_rows(path)]


@pytest.mark.slow
def test_failed_rerun_never_replaces_an_ok_record(finished, dirs):
    rec, log = finished
    before, log_before = rec.read_bytes(), log.read_bytes()
    out = cli([*slow_attack(dirs, "done"), "force=true", "device=cuda"])  # no CUDA here
    assert out.returncode == 2 and "CUDA is not available" in out.stderr
    assert rec.read_bytes() == before and log.read_bytes() == log_before
    failed = json.loads(rec.with_name(rec.stem + ".failed.json").read_text())
    assert failed["status"] == "failed" and "CUDA" in failed["error"]
    # one job of a sweep with a bad device: the other is skipped, the ok record stays
    out = cli(["-m", *slow_attack(dirs, "done"), "device=cpu,tpu"])
    assert out.returncode == 2 and "device='tpu'" in out.stderr
    assert rec.read_bytes() == before


@pytest.mark.slow
def test_ctrl_c_during_forced_rerun_keeps_the_ok_record_and_log(finished, dirs):
    rec, log = finished
    before, log_before = rec.read_bytes(), log.read_bytes()
    proc = spawn([*slow_attack(dirs, "done"), "force=true"])
    wait_for_lines(rec.with_name(rec.stem + ".attack.partial.jsonl"), 2, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-3000:]  # the job's output says where Ctrl-C went
    assert rec.read_bytes() == before and log.read_bytes() == log_before
    failed = json.loads(rec.with_name(rec.stem + ".failed.json").read_text())
    assert "KeyboardInterrupt" in failed["error"]


@pytest.mark.slow
def test_sigterm_leaves_a_failed_record(dirs):
    proc = spawn(slow_attack(dirs, "term"))
    runs = dirs["results"] / "runs" / "term"
    start = time.time()
    while not list(runs.glob("*.attack.partial.jsonl")) and time.time() - start < 300:
        time.sleep(0.05)
    partial = next(runs.glob("*.attack.partial.jsonl"))
    wait_for_lines(partial, 2, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 143
    rec = json.loads(next(p for p in runs.glob("*.json")).read_text())
    assert rec["status"] == "failed" and "SIGTERM" in rec["error"]


@pytest.mark.slow
def test_two_identical_jobs_at_once_run_once(finished, dirs):
    """Two identical jobs started together in real processes: one runs, the other waits for
    it and skips; one record, and one log whose lines are the uninterrupted run's."""
    _, full_log = finished
    procs = [spawn(slow_attack(dirs, "twice")) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("written by a concurrent run of the same job" in o for o in outs) == 1
    runs = dirs["results"] / "runs" / "twice"
    records = list(runs.glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "ok"
    (log,) = runs.glob("*.attack.jsonl.gz")
    rows = _rows(log)
    assert [r["position"] for r in rows] == list(range(32))  # no position twice
    assert rows == _rows(full_log)


@pytest.mark.slow
def test_sigkill_mid_attack_resumes_to_the_uninterrupted_log(finished, dirs):
    _, full_log = finished
    proc = spawn(slow_attack(dirs, "killed"))
    runs = dirs["results"] / "runs" / "killed"
    start = time.time()
    while not list(runs.glob("*.attack.partial.jsonl")) and time.time() - start < 300:
        time.sleep(0.05)
    partial = next(runs.glob("*.attack.partial.jsonl"))
    wait_for_lines(partial, 5, proc)
    proc.kill()
    proc.wait(timeout=60)
    n_before = len(partial.read_text().splitlines())
    out = cli(slow_attack(dirs, "killed"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        f"resuming after {n_before}" in out.stderr or f"resuming after {n_before - 1}" in out.stderr
    )
    final = next(runs.glob("*.attack.jsonl.gz"))
    assert _rows(final) == _rows(full_log)
    assert not list(runs.glob("*.partial.jsonl"))


@pytest.mark.slow
def test_corrupt_record_is_named_and_rebuilt_by_force(finished, dirs, tmp_path):
    rec, _ = finished
    res = tmp_path / "results"
    (res / "runs" / "done").mkdir(parents=True)
    broken = res / "runs" / "done" / rec.name
    broken.write_text(rec.read_text()[:100])  # truncated
    args = [*slow_attack(dirs, "done"), f"paths.results_dir={res}", "attack=none"]
    out = cli(args)
    # attack=none is another job: corrupt the right record for it
    assert out.returncode == 0
    other = next(p for p in (res / "runs" / "done").glob("*.json") if p.name != rec.name)
    other.write_text("{ not json")
    out = cli(args)
    assert out.returncode == 2 and str(other) in out.stderr and "force=true" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli([*args, "force=true"])
    assert out.returncode == 0
    assert json.loads(other.read_text())["status"] == "ok"


@pytest.mark.slow
def test_unwritable_results_path_fails_before_work(dirs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = cli([*base_args(dirs, "w"), f"paths.results_dir={blocker / 'sub'}"])
    assert out.returncode == 2 and "cannot write under" in out.stderr
    assert "set paths.results_dir to a writable folder" in out.stderr
    assert "Traceback" not in out.stderr
    assert "dense" not in out.stderr.split("cannot write")[0].lower().split("error")[-1]
    out = cli([*base_args(dirs, "w"), f"paths.cache_dir={blocker / 'cache'}"])
    assert out.returncode == 2 and "set paths.cache_dir to a writable folder" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_wrong_head_size_checkpoint_is_one_line(dirs, tmp_path):
    from benchmark.models.loading import build_tiny_bert

    model, tok = build_tiny_bert(3, tmp_path / "vocab")
    model.save_pretrained(tmp_path / "ck")
    tok.save_pretrained(tmp_path / "ck")
    out = cli([*base_args(dirs, "head"), f"model.finetuned={tmp_path / 'ck'}"])
    assert out.returncode == 2 and "classifier head" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    rec = json.loads(next((dirs["results"] / "runs" / "head").glob("*.json")).read_text())
    assert rec["status"] == "failed"


@pytest.mark.slow
def test_sweep_user_error_ends_with_exit_2_after_the_other_jobs(dirs):
    out = cli(["-m", *base_args(dirs, "sweep"), "attack=none", "eval_batch_size=16,0"])
    assert out.returncode == 2
    assert "eval_batch_size=0" in out.stderr and "Traceback" not in out.stderr
    recs = [json.loads(p.read_text()) for p in (dirs["results"] / "runs" / "sweep").glob("*.json")]
    assert [r["status"] for r in recs] == ["ok"]


@pytest.mark.slow
def test_sweep_functions_are_validated_on_their_values(dirs):
    out = cli(["-m", *base_args(dirs, "sweepfn"), "attack=none", "seed=choice(1.5)"])
    assert out.returncode == 2 and "seed=1.5" in out.stderr


@pytest.mark.slow
def test_time_limit_is_its_own_column(dirs):
    out = cli([*base_args(dirs, "limit"), "attack.max_seconds_per_example=0.001"])
    assert out.returncode == 0, out.stderr[-2000:]
    rec = json.loads(next((dirs["results"] / "runs" / "limit").glob("*.json")).read_text())
    assert rec["n_limit"] == rec["n_total"] == 8 and rec["n_failed"] == 0
    rows = _rows(next((dirs["results"] / "runs" / "limit").glob("*.attack.jsonl.gz")))
    assert {r["result"] for r in rows} == {"limit"}


@pytest.mark.slow
def test_wandb_init_error_is_one_line(dirs):
    env_args = [*base_args(dirs, "wb"), "logger=wandb", "logger.mode=online", "attack=none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_API_KEY": "", "WANDB_MODE": "",
           "HOME": str(dirs["base"])}  # fmt: skip
    env.pop("WANDB_MODE")
    out = subprocess.run([sys.executable, "-m", "benchmark.run", *env_args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)  # fmt: skip
    out.stderr = out.stdout
    assert out.returncode == 2 and "W&B could not start" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_truncated_pruned_cache_is_named_and_rebuilt(dirs, tmp_path):
    args = [*base_args(dirs, "cache"), "attack=none", f"paths.cache_dir={tmp_path / 'c'}",
            f"paths.results_dir={tmp_path / 'r'}"]  # fmt: skip
    assert cli(args).returncode == 0
    (entry,) = (tmp_path / "c" / "pruned").iterdir()
    weights = entry / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # a kill during the write
    out = cli([*args, "force=true"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"pruned cache {entry} is unreadable" in out.stderr and "pruning again" in out.stderr
    assert (entry / "weights.pt").stat().st_size > 100  # rebuilt


def test_aggregator_skips_and_names_bad_files(tmp_path, caplog):
    from benchmark.reporting import aggregate

    runs = tmp_path / "runs" / "x"
    runs.mkdir(parents=True)
    (runs / "broken.json").write_text('{"run_id": "a", "status": "o')  # truncated
    (runs / "notarecord.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING):
        rc = aggregate.main(["--results-dir", str(tmp_path)])
    assert rc == 0 and (tmp_path / "leaderboard.md").is_file()
    assert str(runs / "broken.json") in caplog.text
    assert str(runs / "notarecord.json") in caplog.text


def test_stale_records_are_listed(tmp_path):
    """A record whose option's version or keys changed since it ran is listed as stale."""
    from benchmark.records.staleness import stale_reasons, stale_records

    current = {
        "_target_": "benchmark.pruners.magnitude.MagnitudePruner",
        "version": 1,
        "scope": "encoder_linear",
        "granularity": "layer",
        "structure": "unstructured",
    }
    rec = {"run_id": "a", "status": "ok",
           "cfg": {"choices": {"pruner": "magnitude"}, "pruner": dict(current)}}  # fmt: skip
    assert stale_reasons(rec) == []
    old = {**rec, "cfg": {**rec["cfg"], "pruner": {**current, "version": 0}}}
    assert any("version 0 -> 1" in r for r in stale_reasons(old))
    fewer = {k: v for k, v in current.items() if k != "structure"}
    assert any(
        "new keys ['structure']" in r
        for r in stale_reasons({**rec, "cfg": {**rec["cfg"], "pruner": fewer}})
    )
    gone = {**rec, "cfg": {**rec["cfg"], "choices": {"pruner": "no_such_pruner"}}}
    assert stale_reasons(gone) == ["pruner 'no_such_pruner' no longer exists"]
    # a key the experiment preset sets on every attack (its hang guard) is not "lost" from
    # attack=none, whose file never had it; under another experiment it is
    none = {"_target_": "benchmark.attacks.adapter.AttackSpec", "recipe": "none",
            "num_examples": 0, "seed": 0, "max_seconds_per_example": None}  # fmt: skip
    guarded = {"run_id": "b", "status": "ok", "exp_name": "embedded_agnews",
               "cfg": {"choices": {"attack": "none"}, "attack": none}}  # fmt: skip
    assert stale_reasons(guarded) == []
    assert stale_reasons({**guarded, "exp_name": "my_exp"}) == [
        "attack 'none' lost keys ['max_seconds_per_example']"
    ]
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "a.json").write_text(json.dumps(old))
    assert [p.name for p, _ in stale_records(tmp_path)] == ["a.json"]


def test_a_signal_whose_exception_python_dropped_still_fails_the_job():
    """SIGINT/SIGTERM handlers remember the signal; a job whose KeyboardInterrupt was lost (an
    exception raised in a ``__del__`` is printed and dropped) fails before writing ``ok``."""
    from benchmark import run
    from benchmark.jobs import build

    build.SIGNALS_SEEN.clear()
    build._check_not_interrupted()  # nothing seen: the job may write ok
    with pytest.raises(KeyboardInterrupt):
        run._on_sigint(signal.SIGINT, None)  # the exception a handler raises...
    with pytest.raises(KeyboardInterrupt, match="SIGINT received during the job"):
        build._check_not_interrupted()  # ...is raised again even if it was swallowed
    with pytest.raises(build.JobTerminated):
        run._on_sigterm(signal.SIGTERM, None)
    with pytest.raises(build.JobTerminated, match="SIGTERM"):
        build._check_not_interrupted()
    build.SIGNALS_SEEN.clear()


def test_max_length_beyond_the_models_positions_is_one_line(dirs, caplog, capsys):
    rc, text = call([*base_args(dirs, "positions"), "dataset.max_length=200"], caplog, capsys)
    assert rc == 2 and "exceeds the 128 positions of model 'tiny_bert'" in text, text
    assert "Traceback" not in text
    rc, text = call([*base_args(dirs, "positions"), "dataset.max_length=128", "attack=none",
                     "pruner=magnitude", "sparsity=0.5"], caplog, capsys)  # fmt: skip
    assert rc == 0, text


@pytest.mark.parametrize("model,kind", [("tiny_distilbert", "distilbert"),
                                        ("tiny_deberta", "deberta-v2")])  # fmt: skip
def test_structured_on_another_layout_stops_before_the_dense_model(model, kind, dirs, caplog,
                                                                   capsys):  # fmt: skip
    """pruner=structured addresses BERT's block modules: on DistilBERT or DeBERTa it stops with
    its one line in the config check, before the dense model is fine-tuned, with no record."""
    rc, text = call([*base_args(dirs, "structured"), f"model={model}", "pruner=structured"],
                    caplog, capsys)  # fmt: skip
    assert rc == 2, text
    assert (f"pruner=structured removes heads and neurons of the BERT layout only; model type "
            f"{kind!r} is not supported") in text, text  # fmt: skip
    assert "Traceback" not in text and "stage dense model" not in text
    assert not list((dirs["cache"] / "dense").glob(f"{model}-*"))  # nothing fine-tuned
    assert not list((dirs["results"] / "runs" / "structured").glob("*.json"))


def test_tiny_model_types_are_the_built_models_types(tmp_path):
    """The config check names a tiny model's type without building it; it must be the type the
    built model has."""
    from benchmark.jobs.validate import TINY_MODEL_TYPES
    from benchmark.models.loading import TINY_KINDS, build_tiny

    assert set(TINY_MODEL_TYPES) == set(TINY_KINDS)
    for kind in TINY_KINDS:
        model, _ = build_tiny(kind, 2, tmp_path / kind)
        assert model.config.model_type == TINY_MODEL_TYPES[kind], kind


def test_a_cached_model_is_not_used_for_another_task_shape(dirs, caplog, capsys):
    """The 2-class tiny task, then num_labels=3: the dense cache key holds num_labels and the
    training-split check runs before any cache is read, so the second job fails in one line
    instead of returning an ok record from the 2-class model."""
    args = [*base_args(dirs, "shape"), "attack=none", "pruner=magnitude", "sparsity=0.5"]
    rc, text = call(args, caplog, capsys)
    assert rc == 0, text
    rc, text = call([*args, "dataset.num_labels=3"], caplog, capsys)
    assert rc == 2 and "2 classes but dataset.num_labels=3" in text, text
    assert "Traceback" not in text


# ------------------------------------------------------------- a full disk, hand-edited records

# ``python -m benchmark.run`` in a process whose disk is full for the files whose names match
# RPB_FULL_DISK (a regex on the temp file's name): their fsync raises ENOSPC, as a write to a
# full disk does, so the project's own write path meets the error. RPB_FAIL_JOB makes the job
# itself fail mid-way (after its dense model and pruning, as any error inside a job would).
FULL_DISK_MAIN = """
import errno, os, re, sys
pattern = re.compile(os.environ["RPB_FULL_DISK"])
real_fsync = os.fsync
def fsync(fd):
    if pattern.search(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)
os.fsync = fsync
if os.environ.get("RPB_FAIL_JOB"):
    from benchmark.errors import UserError
    from benchmark.jobs import build
    def execute(job, record):
        raise UserError("the job failed mid-way")
    build.execute = execute
from benchmark.run import main
sys.argv = ["benchmark.run", *sys.argv[1:]]
main()
"""


def cli_full_disk(args, pattern, fail_job=False):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "RPB_FULL_DISK": pattern, "RPB_FAIL_JOB": "1" if fail_job else ""}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", FULL_DISK_MAIN, *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)  # fmt: skip
    out.stderr = out.stdout
    return out


@pytest.fixture(scope="module")
def small_done(dirs):
    """A finished 8-example job (ok record and attack log) for the full-disk cases."""
    args = base_args(dirs, "full")
    out = cli(args)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = next((dirs["results"] / "runs" / "full").glob("*.json"))
    return args, rec, rec.with_name(rec.stem + ".attack.jsonl.gz")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before-the-job", "inside-the-job"])
def test_full_disk_writing_a_failed_record_keeps_the_ok_record(small_done, where):
    """A forced rerun fails (before the job starts: no CUDA; or inside it) on a full disk: its
    failed record cannot be written. One line says so and that the ok record is unchanged, the
    job's own error follows, and the ok record and its log are byte-identical."""
    args, rec, log = small_done
    before, log_before = rec.read_bytes(), log.read_bytes()
    extra = ["device=cuda"] if where == "before-the-job" else []
    out = cli_full_disk([*args, "force=true", *extra], r"\.failed\.json\.",
                        fail_job=where == "inside-the-job")  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    line = (f"could not write the failed record {failed_path_of(rec)} (No space left on "
            f"device); the ok record {rec} is unchanged")  # fmt: skip
    assert line in out.stderr, out.stderr[-3000:]
    assert ("CUDA is not available" if extra else "the job failed mid-way") in out.stderr
    assert "Traceback" not in out.stderr
    assert rec.read_bytes() == before and log.read_bytes() == log_before
    assert not failed_path_of(rec).exists()
    assert not list(rec.parent.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.slow
def test_full_disk_writing_a_finished_record_replaces_nothing(small_done):
    """A forced rerun that finishes but cannot write its record (full disk): the old record
    and the old log stay together, one line says so, exit 2."""
    args, rec, log = small_done
    before, log_before = rec.read_bytes(), log.read_bytes()
    out = cli_full_disk([*args, "force=true"], rf"^\.{rec.stem}\.json\.")
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"could not write the record {rec} (No space left on device)" in out.stderr
    assert "Traceback" not in out.stderr
    assert rec.read_bytes() == before
    assert log.read_bytes() == log_before  # not the new log
    assert json.loads(failed_path_of(rec).read_text())["status"] == "failed"
    failed_path_of(rec).unlink()


def failed_path_of(rec: Path) -> Path:
    return rec.with_name(rec.stem + ".failed.json")


def _drop_pruner(text: str) -> str:
    return json.dumps({k: v for k, v in json.loads(text).items() if k != "pruner"})


def _aua_in_words(text: str) -> str:
    return json.dumps({**json.loads(text), "aua": "high"})


# (id, the edit of a record's text, usable, the fragment of the line naming the file)
HAND_EDITS = [
    ("truncated", lambda text: text[: len(text) // 2], False, "is not valid JSON"),
    ("wrong-type", _aua_in_words, False, "wrong type: aua='high'"),
    ("not-an-object", lambda text: "[1, 2]", False, "a JSON list, not a record object"),
    ("missing-key", _drop_pruner, True, "lacks key(s) pruner"),
]


@pytest.mark.slow
def test_hand_edited_records_are_named_and_the_sweep_goes_on(dirs):
    """A sweep whose jobs' ``ok`` records were hand-edited or cut short. A record that cannot
    be read as one names its file in one line (``force=true`` rebuilds it) and its job stops; a
    record that only lacks a key is named and skipped as done; the other jobs run, the sweep
    exits 2, and the edited files stay as they were."""
    args = [*base_args(dirs, "edited"), "attack=none", "pruner=magnitude"]
    values = ["0.1", "0.2", "0.3", "0.4", "0.5"]
    out = cli(["-m", *args, f"sparsity={','.join(values[:4])}"])
    assert out.returncode == 0, out.stderr[-3000:]
    runs = dirs["results"] / "runs" / "edited"
    by_sparsity = {json.loads(p.read_text())["sparsity_target"]: p for p in runs.glob("*.json")}
    edited = {}
    for (_, edit, _, _), value in zip(HAND_EDITS, values, strict=False):
        path = by_sparsity[float(value)]
        path.write_text(edit(path.read_text()))
        edited[path] = path.read_bytes()
    out = cli(["-m", *args, f"sparsity={','.join(values)}"])
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    for (_, _, usable, fragment), path in zip(HAND_EDITS, edited, strict=True):
        named = f"record {path} lacks" if usable else f"record {path} is not"
        assert named in out.stderr and fragment in out.stderr, out.stderr[-3000:]
        assert path.read_bytes() == edited[path]
    assert "rerun with force=true to rebuild it" in out.stderr
    unusable = sum(not usable for _, _, usable, _ in HAND_EDITS)
    assert f"{unusable} job(s) of the sweep stopped on a user error" in out.stderr
    new = [p for p in runs.glob("*.json") if p not in edited]  # the fifth job ran
    assert [json.loads(p.read_text())["sparsity_target"] for p in new] == [0.5]


def test_aggregator_names_hand_edited_records_and_goes_on(tmp_path, caplog):
    """The leaderboard names a truncated or hand-edited record and what is wrong with it, and
    is built from the others: one that cannot be read as a record is left out, one that only
    lacks a key is read with that key empty."""
    from benchmark.reporting import aggregate

    runs = tmp_path / "runs" / "x"
    runs.mkdir(parents=True)
    good = {"run_id": "good", "status": "ok", "exp_name": "x", "model": "tiny_bert",
            "dataset": "tiny", "pruner": "magnitude", "attack": "none", "seed": 0,
            "sparsity_target": 0.5, "clean_acc": 0.75, "cfg": {}}  # fmt: skip
    (runs / "good.json").write_text(json.dumps(good))
    text = json.dumps({**good, "run_id": "edited", "seed": 1})
    for name, edit, _, _ in HAND_EDITS:
        (runs / f"{name}.json").write_text(edit(text))
    (runs / "cfg-list.json").write_text(json.dumps({**good, "run_id": "c", "cfg": [1]}))
    with caplog.at_level(logging.WARNING):
        rc = aggregate.main(["--results-dir", str(tmp_path), "--summary", "x"])
    assert rc == 0
    for name, _, _, fragment in HAND_EDITS:
        assert f"{runs / name}.json" in caplog.text and fragment in caplog.text, caplog.text
    assert f"{runs / 'cfg-list.json'}" in caplog.text and "cfg=[1]" in caplog.text
    board = (tmp_path / "leaderboard.md").read_text()
    assert "| tiny_bert |" in board and "| magnitude |" in board  # the good record is in it
    assert (tmp_path / "tables" / "summary_x.md").is_file()


# ------------------------------------------------------------- a table spec of the user's own

SMOKE_SPEC = (ROOT / "conf" / "table" / "smoke.yaml").read_text(encoding="utf-8")

# (id, how the user's copy of conf/table/smoke.yaml is changed, fragment of the error line)
TABLE_SPEC_TYPOS = [
    ("unknown-top-level-key", lambda t: t.replace("columns:", "colums:"),
     "unknown key 'colums' (did you mean 'columns'?)"),
    ("misspelled-context-key", lambda t: t.replace("fixed: {model:", "fixed: {modle:"),
     "unknown key in fixed 'modle' (did you mean 'model'?)"),
    ("misspelled-row-key", lambda t: t.replace("- {sparsity: 0.0,", "- {sparsty: 0.0,"),
     "unknown key in rows 'sparsty' (did you mean 'sparsity'?)"),
    ("misspelled-metric", lambda t: t.replace("metrics: [acc, clean, aua, suc]",
                                              "metrics: [acc, clean, aua, sucess]"),
     "unknown metric in metrics 'sucess' (did you mean 'suc'?)"),
    ("misspelled-selector", lambda t: t.replace("dense: {pruner: none}", "dense: {prunr: none}"),
     "unknown record column in methods.dense 'prunr' (did you mean 'pruner'?)"),
    ("missing-title", lambda t: t.replace("title:", "# title:"), "missing key 'title'"),
    ("not-yaml", lambda t: t.replace("rows:", "rows: [\n  -"), "is not valid YAML"),
    ("not-a-mapping", lambda t: "- a\n- b\n", "a table spec is a mapping of keys, got list"),
]  # fmt: skip


@pytest.mark.parametrize("case", TABLE_SPEC_TYPOS, ids=[c[0] for c in TABLE_SPEC_TYPOS])
def test_table_spec_typo_is_one_line(case, tmp_path, caplog):
    """``aggregate --table my.yaml`` with a typo: one line naming the file and the key, exit 2,
    before any table (or the leaderboard) is written."""
    from benchmark.reporting import aggregate

    _, edit, fragment = case
    (tmp_path / "runs").mkdir()
    spec = tmp_path / "my.yaml"
    spec.write_text(edit(SMOKE_SPEC), encoding="utf-8")
    assert edit(SMOKE_SPEC) != SMOKE_SPEC  # the edit found its target
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = aggregate.main(["--results-dir", str(tmp_path), "--table", str(spec)])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2 and len(errors) == 1, caplog.text
    assert errors[0].startswith(f"error: table spec {spec}") and fragment in errors[0], errors
    assert not (tmp_path / "leaderboard.md").exists() and not (tmp_path / "tables").exists()


def test_table_spec_file_missing_is_one_line_in_a_real_process(tmp_path):
    (tmp_path / "runs").mkdir()
    cases = [(tmp_path / "my.yaml", f"error: table spec file {tmp_path / 'my.yaml'} does not "
              "exist"), ("smokee", "error: no table spec 'smokee'; valid: ")]  # fmt: skip
    spec = tmp_path / "typo.yaml"
    spec.write_text(SMOKE_SPEC.replace("columns:", "colums:"), encoding="utf-8")
    cases.append((spec, f"error: table spec {spec}: unknown key 'colums'"))
    for name, line in cases:
        out = subprocess.run([sys.executable, "-m", "benchmark.aggregate", "--results-dir",
                              str(tmp_path), "--table", str(name)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip().startswith(line) and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "leaderboard.md").exists()


# ------------------------------------------------------------- provenance of a sweep's records


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def test_records_carry_the_checkout_the_process_started_from(dirs, tmp_path, monkeypatch,
                                                             caplog, capsys):  # fmt: skip
    """A two-job sweep during which the checkout is edited and committed (after the process
    started, before its first job): both records carry the sha and dirty flag of the code the
    process imported at its start, not the checkout's state when each record was written."""
    import functools

    from benchmark import run
    from benchmark.records import store

    repo = tmp_path / "checkout"
    (repo / "benchmark").mkdir(parents=True)
    (repo / "benchmark" / "code.py").write_text("X = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "start")
    start_sha = _git(repo, "rev-parse", "--short=12", "HEAD")
    monkeypatch.setattr(store, "git_state", functools.partial(store.git_state, root=repo))
    monkeypatch.setattr(store, "_PROCESS_GIT", {})  # a fresh process

    real_run_task, edits = run.run_task, []

    def run_task(cfg):
        if not edits:  # while the sweep runs: a commit, then an uncommitted edit of code
            (repo / "benchmark" / "code.py").write_text("X = 2\n")
            _git(repo, "commit", "-qam", "during the sweep")
            (repo / "benchmark" / "code.py").write_text("X = 3\n")
            edits.append(1)
        return real_run_task(cfg)

    monkeypatch.setattr(run, "run_task", run_task)
    args = ["-m", *base_args(dirs, "gitstate"), "attack=none", "pruner=magnitude",
            "sparsity=0.3,0.5"]  # fmt: skip
    rc, text = call(args, caplog, capsys)
    assert rc == 0 and edits, text
    now = store.git_state()  # the checkout (patched above)
    assert now["git_sha"] != start_sha and now["git_dirty"] is True  # the checkout did change
    recs = [json.loads(p.read_text())
            for p in (dirs["results"] / "runs" / "gitstate").glob("*.json")]  # fmt: skip
    assert len(recs) == 2
    assert [(r["git_sha"], r["git_dirty"]) for r in recs] == [(start_sha, False)] * 2


# ------------------------------------------------------------- a joblib sweep whose parent dies


# A stand-in for a joblib sweep: a parent process that starts one worker and waits. The worker
# does what a joblib worker's job does first (the SIGTERM handler, the watch on the sweep's
# process), then waits in Python as a job would, and says how it ended.
SWEEP_STANDIN = """
import os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                          env={**os.environ, "RPB_SWEEP_PID": str(os.getpid())})
print(worker.pid, flush=True)
time.sleep(600)
"""
WORKER_STANDIN = """
import os, sys, time
from pathlib import Path
from benchmark import run
run.install_sigterm_handler()
run.end_with_parent(int(os.environ["RPB_SWEEP_PID"]))
out = Path(sys.argv[1])
out.write_text("running")
try:
    time.sleep(600)
except BaseException as exc:
    out.write_text(f"{type(exc).__name__}: {exc}")
    raise
"""


def test_a_joblib_worker_ends_with_its_sweeps_process(tmp_path):
    """The sweep's process is killed (SIGKILL); its worker notices within seconds, and its job
    ends as on SIGTERM, with the reason a failed record would carry."""
    import psutil

    said = tmp_path / "worker.txt"
    parent = subprocess.Popen([sys.executable, "-c", SWEEP_STANDIN, WORKER_STANDIN, str(said)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    worker = psutil.Process(int(parent.stdout.readline()))
    try:
        start = time.time()
        while not said.exists() and time.time() - start < 300:
            time.sleep(0.05)
        assert said.read_text() == "running"
        parent.kill()
        parent.wait(timeout=60)
        _, alive = psutil.wait_procs([worker], timeout=30)
    finally:
        with contextlib.suppress(psutil.Error):
            worker.kill()
    assert alive == []
    assert said.read_text() == (f"JobTerminated: SIGTERM: the sweep's process (pid {parent.pid}) "
                                "ended, and its joblib worker with it")  # fmt: skip


@pytest.mark.slow
def test_joblib_workers_end_with_a_killed_sweep(dirs):
    """A joblib sweep (2 workers) whose own process is killed (SIGKILL: nothing of it runs
    again) while both workers are in a job: the workers, and the helper processes they keep
    alive, end within seconds; a job that had started writes a failed record saying why."""
    import psutil

    runs = dirs["results"] / "runs" / "orphans"
    proc = spawn(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  *slow_attack(dirs, "orphans"), "sparsity=0.1,0.2,0.3,0.4"])  # fmt: skip
    workers = []
    try:
        start = time.time()
        while time.time() - start < 900 and proc.poll() is None:
            if len(list(runs.glob(".*.lock"))) >= 2:  # each worker holds its job's lock
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        proc.kill()
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs(workers, timeout=45)
    finally:
        for p in [proc, *workers]:
            with contextlib.suppress(Exception):
                p.kill()
    assert alive == [], [(p.pid, " ".join(p.cmdline())[:80]) for p in alive]
    for path in runs.glob("*.json"):  # a job stopped mid-way says why
        rec = json.loads(path.read_text())
        assert rec["status"] == "ok" or "the sweep's process" in rec["error"], rec["error"]
