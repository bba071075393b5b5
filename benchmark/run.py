"""``python -m benchmark.run``: one job (or a ``-m`` sweep of jobs) from the Hydra config.

Each job loads or fine-tunes the dense model, prunes it, measures clean accuracy and runs the
attack, then writes one JSON record to ``results/runs/<exp_name>/<run_id>.json``. A job
whose record exists (status ok) is skipped unless ``force=true``. Bad input (unknown option,
sparsity outside [0, 1), missing file or resource) prints one line and exits with code 2.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmark.errors import JobTerminated, UserError, note_signal
from benchmark.jobs.registry import GROUPS, check_option

log = logging.getLogger("benchmark.run")
ROOT = Path(__file__).resolve().parents[1]
SWEEP_SYNTAX = re.compile(r"[()\[\]{}$]")  # range(), choice(), interpolations: left to Hydra


def user_config_dirs(argv: list[str]) -> list[Path]:
    """Config folders a user adds: ``--config-dir DIR`` / ``-cd DIR`` and
    ``hydra.searchpath=[file://DIR,...]`` (their groups are options like the built-in ones)."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            for item in arg.split("=", 1)[1].strip("[]").split(","):
                item = item.strip().strip("'\"")
                if item.startswith("file://"):
                    dirs.append(Path(item[len("file://") :]))
    return dirs


def _overrides(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (flags and their values dropped)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp",
                   "--experimental-rerun"):  # fmt: skip
            skip = True
            continue
        if arg.startswith("-") or "=" not in arg:
            continue
        out.append(arg)
    return out


def check_overrides(argv: list[str]) -> None:
    """Validate simple ``group=a,b`` and ``sparsity=x,y`` overrides before Hydra starts: a
    sweep value needs ``-m``, a ``--config-dir`` must be a folder."""
    extra = user_config_dirs(argv)
    for folder in extra:
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise UserError(f"--config-dir {folder} {what}")
    sweep = bool({"-m", "--multirun"} & set(argv))
    for arg in _overrides(argv):
        key, _, value = arg.lstrip("+~").partition("=")
        quoted = value.startswith(("'", '"'))
        if not sweep and "," in value and not SWEEP_SYNTAX.search(value) and not quoted:
            raise UserError(f"{arg} is a sweep: use -m for a sweep (or {key}=[a,b] for a list)")
    for arg in _overrides(argv):
        key, _, value = arg.lstrip("+~").partition("=")
        if SWEEP_SYNTAX.search(value):
            continue
        for item in value.split(","):
            item = item.strip()
            if key in GROUPS and key != "paths":
                check_option(key, item, extra)
            elif key in ("sparsity", "sparsity_target"):
                try:
                    s = float(item)
                except ValueError:
                    raise UserError(f"sparsity must be a number in [0, 1), got {item!r}") from None
                if not 0.0 <= s < 1.0:
                    raise UserError(f"sparsity must be in [0, 1), got {item}")


def _first_values(overrides: list[str]) -> list[str]:
    """One job's overrides of a sweep: the first value of each ``a,b,c`` list; sweep
    functions (``range``, ``choice``, ...) are left to the per-job validation."""
    out = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if re.search(r"^\s*\w+\(", value):
            continue
        if "," in value:
            value = _top_level_items(value)[0]
        out.append(f"{key}={value}")
    return out


def _top_level_items(value: str) -> list[str]:
    """``value`` split at the commas outside brackets and quotes: the elements of a sweep
    (``a,b``; ``{x:1,y:2},{x:1,y:3}``); a list or dict value (``[a,b]``) is one element."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(value):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(value[start:i])
            start = i + 1
    return [*items, value[start:]]


def check_composition(argv: list[str]) -> None:
    """Compose the config once as Hydra will, and turn Hydra's own errors (an unknown key,
    an unknown option of any group, ``hydra/launcher`` included) into one line, exit 2."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))
    overrides = _first_values(_overrides(argv))
    extra = user_config_dirs(argv)
    if extra:
        paths = ",".join(f"file://{d.resolve()}" for d in extra)
        overrides = [o for o in overrides if not o.lstrip("+").startswith("hydra.searchpath=")]
        overrides.append(f"hydra.searchpath=[{paths}]")
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            compose("run", overrides=overrides, return_hydra_config=True)
    except HydraException as exc:
        raise UserError(_hydra_error_line(exc, overrides)) from None


def _hydra_error_line(exc: Exception, overrides: list[str]) -> str:
    import difflib

    text = str(exc)
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        group, _, sub = key.rpartition(".")
        valid = _known_keys(group, [o for o in overrides
                                    if o.partition("=")[0].lstrip("+~") != key])  # fmt: skip
        close = difflib.get_close_matches(sub, valid, n=1)
        hint = f" (did you mean {(group + '.') if group else ''}{close[0]}?)" if close else ""
        where = f"in {group}" if group else "at the top level"
        return (f"unknown config key {key!r}{hint}; valid keys {where}: {', '.join(valid)}"
                if valid else f"unknown config key {key!r}")  # fmt: skip
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        group, _, name = m.group(1).rpartition("/")
        opts = re.findall(r"^\t(\S+)$", text, flags=re.M)
        close = difflib.get_close_matches(name, opts, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {group} {name!r}{hint}; valid: {', '.join(opts)}"
    return text.splitlines()[0] if text else type(exc).__name__


def _known_keys(group: str, overrides: list[str]) -> list[str]:
    """Keys of the composed config (top level, or one group) without the failing override."""
    from hydra import compose, initialize_config_dir

    keep = [o for o in overrides if "." not in o.split("=")[0].lstrip("+~")]
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("run", overrides=keep)
    except Exception:
        return []
    node = cfg
    for part in filter(None, group.split(".")):
        node = node.get(part) if hasattr(node, "get") else None
    return sorted(str(k) for k in node) if hasattr(node, "keys") else []


def _hydra_main() -> Any:
    import hydra
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))

    @hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="run")
    def task(cfg) -> dict[str, Any] | None:
        return run_task(cfg)

    return task()


def run_task(cfg) -> dict[str, Any] | None:
    """The body of one Hydra job; returns the record as a dict.

    Order matters for the contract: validate and identify the job (no work, no record), skip
    it when its ``ok`` record exists, check that records can be written, then build and run.
    A failure never replaces an ``ok`` record (see :func:`benchmark.jobs.build.run_job`).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from benchmark.jobs.build import (
        build_job,
        check_writable,
        existing_record,
        job_identity,
        job_lock,
        log_summary,
        run_job,
    )
    from benchmark.records.store import process_git_state

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    install_sigterm_handler()  # also where main() did not run: submitit and joblib workers
    launcher = str((HydraConfig.get().get("launcher") or {}).get("_target_", ""))
    sweep_pid = int(os.environ.get(SWEEP_PID_ENV) or 0)
    if "joblib" in launcher and sweep_pid and os.getpid() != sweep_pid:
        end_with_parent(sweep_pid)  # a worker of a joblib sweep ends with the sweep
    process_git_state()  # a worker's first job: the checkout its imports came from
    try:
        ident = job_identity(cfg, HydraConfig.get().runtime.choices)
        force = bool(ident.resolved.get("force"))
        existing = existing_record(ident, force)
        done = existing is not None and existing.get("status") == "ok"
        if done and ident.resolved.get("skip_existing", True) and not force:
            log.info("skip: record %s exists (force=true to rerun)", ident.path)
            log_summary(existing)
            return existing
        check_writable(ident.path.parent)
        check_writable(Path(ident.resolved["paths"]["cache_dir"]), "paths.cache_dir")
        with job_lock(ident.path):  # one run id runs once at a time: a second one waits here
            existing = existing_record(ident, force)  # ... and skips what the first finished
            done = existing is not None and existing.get("status") == "ok"
            if done and ident.resolved.get("skip_existing", True) and not force:
                log.info("skip: record %s was written by a concurrent run of the same job",
                         ident.path)  # fmt: skip
                log_summary(existing)
                return existing
            job, tracker = build_job(cfg, HydraConfig.get().runtime.choices, ident,
                                     protect=done)  # fmt: skip
            return run_job(job, tracker, protect=done)
    except UserError as exc:
        log.error("error: %s", exc)
        if multirun:
            USER_ERRORS.append(str(exc))
            return None  # the sweep goes on; main() exits with 2 at its end
        sys.exit(2)
    except JobTerminated:
        log.error("error: terminated by SIGTERM (the record says so)")
        sys.exit(143)
    except Exception:
        log.debug(traceback.format_exc())
        raise


USER_ERRORS: list[str] = []  # one line per job of a multirun that stopped on a user error


TERM_REASON = ["SIGTERM received (e.g. a Slurm time limit)"]  # what a failed record says


def _on_sigterm(_signum, _frame) -> None:
    note_signal("SIGTERM")
    raise JobTerminated(TERM_REASON[-1])


_WATCHED: list[int] = []


SWEEP_PID_ENV = "RPB_SWEEP_PID"  # set by main(); a launcher's workers inherit it


def end_with_parent(parent: int, poll_s: float = 1.0, grace_s: float = 30.0) -> None:
    """In a joblib worker: end this process when the sweep's process ``parent`` ends.

    A loky worker outlives a parent killed with SIGKILL (it runs its job to the end, hours
    perhaps, then idles until loky's timeout). A daemon thread checks every ``poll_s`` that
    ``parent`` is still this process's parent (the sweep's pid comes from the environment main()
    set, so a worker whose parent died before its first job notices too); when it is not, the
    worker sends itself SIGTERM, so a running job fails the usual way (its record says why, an
    ``ok`` record stays as it was, a partial attack log is kept for the resume), and
    ``os._exit`` follows ``grace_s`` later if the process has not ended by then. Polling, not
    ``prctl(PR_SET_PDEATHSIG)``: that signal fires when the parent's *thread* that started the
    worker ends, which for loky is not the sweep's end."""
    import threading
    import time

    if _WATCHED:
        return
    _WATCHED.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        TERM_REASON.append(f"SIGTERM: the sweep's process (pid {parent}) ended, and its joblib "
                           "worker with it")  # fmt: skip
        log.error("error: the sweep's process (pid %d) ended; ending its worker (pid %d)",
                  parent, os.getpid())  # fmt: skip
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(143)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _on_sigint(_signum, _frame) -> None:
    note_signal("SIGINT")
    raise KeyboardInterrupt


def install_sigterm_handler() -> None:
    """Turn SIGTERM into ``JobTerminated`` in this process, so the job's record says it was
    terminated, and remember SIGINT and SIGTERM (``errors.SIGNALS_SEEN``) so that a job
    whose signal exception Python dropped still fails instead of writing ``ok``. Called by
    ``main()`` and again by every job (a submitit or joblib worker runs the job without
    ``main()``); only the main thread may set a handler."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)  # Ctrl-C as before, and remembered


USER_GROUPS = ("model", "dataset", "dense", "pruner", "attack", "logger", "budget", "experiment")
FLAGS_WITHOUT_JOB = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc",
                     "--cfg", "-c", "--resolve", "-p", "--package"}  # fmt: skip


def usage() -> str:
    """``--help``: the groups a user picks, their options, the top-level keys."""
    from benchmark.jobs.registry import options

    extra = user_config_dirs(sys.argv[1:])
    lines = [
        "rpb / python -m benchmark.run: prune, evaluate and attack; one JSON record per job.",
        "",
        "usage: rpb [-m] [group=option ...] [key=value ...]   (-m: a sweep, values a,b,c)",
        "",
        "Config groups (group=option):",
    ]
    for group in USER_GROUPS:
        lines.append(f"  {group:<11} {', '.join(options(group, extra))}")
    lines += [
        "",
        "Top-level keys: sparsity (in [0, 1)), seed, device (auto|cpu|cuda[:N]), exp_name,",
        "  force (rerun a finished job), eval_batch_size, max_eval_examples, eval_sample,",
        "  eval_sample_seed, precision (float32|bfloat16|float16), cache_pruned, progress,",
        "  paths.results_dir, paths.cache_dir, paths.data_dir, paths.nltk_data.",
        "A group's own keys: e.g. pruner.nsamples=256, attack.num_examples=872 (--cfg job shows",
        "the composed config). Your own configs: --config-dir DIR (groups as folders).",
        "Hydra's own flags: --hydra-help; shell completion: rpb -sc install=bash.",
        "A record's pruned model as a Hugging Face folder: rpb export RUN_ID --out DIR",
        "  [paths.KEY=VALUE ...] [--push-to-hub REPO] (docs/export.md).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Entry point (``rpb`` and ``python -m benchmark.run``): validate the command line, then
    hand over to Hydra. ``rpb export ...`` is :mod:`benchmark.export` instead."""
    if sys.argv[1:2] == ["export"]:
        from benchmark.export import main as export_main

        sys.exit(export_main(sys.argv[2:]))
    os.environ[SWEEP_PID_ENV] = str(os.getpid())  # a joblib worker ends with this process
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)  # for the checks below; Hydra configures logging itself
    root.setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = set(sys.argv[1:])
    if args & {"--help", "-h"}:
        print(usage())
        return
    if not FLAGS_WITHOUT_JOB & args:
        from benchmark.records.store import process_git_state

        process_git_state()  # the checkout whose code this process imports and runs
    try:
        check_overrides(sys.argv[1:])
        if not FLAGS_WITHOUT_JOB & args:
            check_composition(sys.argv[1:])
    except UserError as exc:
        logging.getLogger("benchmark.run").error("error: %s", exc)
        sys.exit(2)
    finally:
        root.removeHandler(handler)  # else Hydra's --info and job logs print twice
    install_sigterm_handler()
    _hydra_main()
    if USER_ERRORS:
        log.error("error: %d job(s) of the sweep stopped on a user error (above)",
                  len(USER_ERRORS))  # fmt: skip
        sys.exit(2)


if __name__ == "__main__":
    main()
