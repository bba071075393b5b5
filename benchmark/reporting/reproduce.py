"""``scripts/reproduce.sh NAME [ARGS]``: run the sweeps behind a table, then rebuild it.

``NAME`` is a table spec (``conf/table/NAME.yaml`` or a path to a user's own ``.yaml``, whose
``sweeps`` list the sweeps in order) or an experiment preset without a table
(``conf/experiment/NAME.yaml``: its own sweep, then a compact ``--summary NAME``).
``VARIANT=embedded`` adds the spec's ``variant_args`` to every sweep and rebuilds the variant's
table. ``ARGS`` go to every sweep (e.g.
``hydra/launcher=joblib hydra.launcher.n_jobs=2``, ``paths.results_dir=/tmp/r``).

Resumable: finished jobs are skipped (their records exist). A failed sweep does not stop the
others or the aggregation; the exit status is then non-zero. A name that is neither, a spec
with a typo or a variant the spec lacks is one line on stderr and exit status 2, before any
sweep runs.

``scripts/reproduce.sh NAME --plan [ARGS]`` prints the jobs, how many have records, what this
machine lacks and the estimated cost, and runs and writes nothing (:mod:`benchmark.jobs.plan`).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("benchmark.reproduce")

# Presets without a table whose grid is not one rectangle: the extra sweeps after the preset's
# own (``embedded_beyond``: structured pruning at its FLOPs constraints).
EXTRA_SWEEPS: dict[str, list[str]] = {
    "embedded_beyond": ["pruner=structured sparsity=0.3,0.5"],
}
# Further aggregations after the summary: the new methods paired with the seeds' rows.
EXTRA_AGGREGATES: dict[str, list[str]] = {
    "embedded_beyond": [
        f"--compare embedded_beyond --reference {ref} --reference-exp embedded_post_training"
        for ref in ("akr", "sparsegpt")
    ],
}


class UsageError(Exception):
    """A bad NAME or VARIANT: one line, exit status 2."""


def plan(name: str, variant: str | None, args: list[str]) -> tuple[list[list[str]], list[str]]:
    """(sweep argument lists, aggregate arguments) for ``name``."""
    from benchmark.reporting.tables import SpecError, load_spec, table_names

    results = [a.split("=", 1)[1] for a in args if a.startswith("paths.results_dir=")]
    agg_tail = ["--results-dir", results[-1]] if results else []
    if name in table_names() or name.endswith((".yaml", ".yml")):
        try:
            spec = load_spec(name)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
        if variant and variant not in spec.variant_args:
            valid = ", ".join(spec.variant_args) or "none"
            raise UsageError(f"table {name!r} has no variant {variant!r} (valid: {valid})")
        extra = shlex.split(spec.variant_args.get(variant, "")) if variant else []
        sweeps = [["-m", *shlex.split(s), *extra, *args] for s in spec.sweeps]
        table = str(Path(name).resolve()) if name.endswith((".yaml", ".yml")) else name
        agg = ["--table", table, *(["--variant", variant] if variant else [])]
        for summary in spec.summaries:
            agg += ["--summary", summary]
        return sweeps, [*agg, *agg_tail]
    if (ROOT / "conf" / "experiment" / f"{name}.yaml").is_file():
        if variant:
            raise UsageError(f"experiment {name!r} has no variants")
        sweeps = [["-m", f"experiment={name}", *args]]
        sweeps += [["-m", f"experiment={name}", *shlex.split(extra), *args]
                   for extra in EXTRA_SWEEPS.get(name, [])]  # fmt: skip
        return sweeps, ["--summary", name, *agg_tail]
    valid = ", ".join(table_names())
    raise UsageError(f"no table or experiment {name!r}; tables: {valid}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        log.info("%s", __doc__)
        return 0 if argv else 2
    dry = "--plan" in argv[1:]  # print what would run, run and write nothing
    rest = [a for a in argv[1:] if a != "--plan"]
    try:
        sweeps, agg = plan(argv[0], os.environ.get("VARIANT") or None, rest)
    except UsageError as exc:
        log.error("error: %s", exc)
        return 2
    if dry:
        from benchmark.jobs.plan import run_plan

        return run_plan(sweeps)
    status = 0
    for sweep in sweeps:
        log.info("+ python -m benchmark.run %s", " ".join(shlex.quote(a) for a in sweep))
        status |= subprocess.call([sys.executable, "-m", "benchmark.run", *sweep], cwd=ROOT) != 0
    tail = agg[agg.index("--results-dir") :] if "--results-dir" in agg else []
    for cmd in [agg, *(shlex.split(a) + tail for a in EXTRA_AGGREGATES.get(argv[0], []))]:
        log.info("+ python -m benchmark.aggregate %s", " ".join(shlex.quote(a) for a in cmd))
        status |= subprocess.call([sys.executable, "-m", "benchmark.aggregate", *cmd],
                                  cwd=ROOT) != 0  # fmt: skip
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
