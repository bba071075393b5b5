"""``python -m benchmark.aggregate``: records -> leaderboard and paper tables.

Reads every ``results/runs/**/<run_id>.json`` (and its ``<run_id>.attack.jsonl.gz`` attack log
when there is one), keeps status ``ok`` (failed ones are counted and reported), and writes
``results/leaderboard.csv`` and ``.md``: one row per configuration (the record's ``cfg``
without the seed; shown by model, dense recipe, dataset, pruner, training budget, sparsity,
attack), a job stored twice counted once; mean, std, 95% interval over seeds of each metric,
n, and whether the model is degenerate (docs/statistics.md). ``--summary EXP`` (repeatable)
writes a compact table of those experiments: pruner x sparsity rows, Aua [interval] / Suc per
attack (``results/tables/summary_<exp>[+<exp>].md``).

``--table <name>`` (a spec under ``conf/table/``; ``all`` for every spec) also rebuilds that
paper table in the paper's layout beside the published numbers (``benchmark.reporting.tables``), as
``results/tables/<name>.{md,csv,tex}`` (the numbers behind it are in the leaderboard), and plots
clean accuracy and Aua against sparsity under ``results/tables/plots/``. ``--variant
embedded`` reads the embedded-model / offline-attack runs of the same table instead.

``--compare EXP --reference PRUNER[@SPARSITY]`` writes paired per-example comparisons of EXP's
rows against the reference (``results/tables/compare_<EXP>.{csv,md}``,
``benchmark.reporting.compare``). ``--effects NAME`` writes the effect table of
``conf/effects/NAME.yaml``: one method's configurations (options, versions) side by side, each
paired against its reference row (``results/tables/effects_NAME.{md,csv}``,
``benchmark.reporting.effects``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from benchmark.reporting.leaderboard import write_leaderboard
from benchmark.reporting.mirror import csv_stamps, mirror_tables_to_wandb
from benchmark.reporting.paper import write_table
from benchmark.reporting.records import load_records, report_stale, without_noise
from benchmark.reporting.summary import write_summary
from benchmark.reporting.tables import SpecError, load_spec, table_names

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(prog="python -m benchmark.aggregate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--results-dir", type=Path, default=root / "results")
    ap.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME",
        help=f"rebuild a paper table (repeatable; 'all'): {', '.join(table_names())}",
    )
    ap.add_argument(
        "--summary",
        action="append",
        default=[],
        metavar="EXP",
        help="a compact table (pruner x sparsity rows, Aua/Suc per attack) of these "
        "experiments together (repeatable): results/tables/summary_<exp>[+<exp>].{md,csv}",
    )
    ap.add_argument(
        "--variant",
        default=None,
        help="read a variant's runs, e.g. 'embedded' (conf/table/_variants.yaml)",
    )
    ap.add_argument(
        "--wandb",
        default="auto",
        choices=["auto", "online", "offline", "off"],
        help="log the tables written to W&B as typed tables, one run of job type "
        "'aggregate' (auto: when some job logged online)",
    )
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="EXP",
        help="paired comparison of EXP's rows against --reference (repeatable): "
        "results/tables/compare_<EXP>.{csv,md}",
    )
    ap.add_argument(
        "--analyses",
        action="append",
        default=[],
        metavar="EXP",
        help="Aua against query and perturbation budgets, worst case over attacks, from the "
        "per-example logs of EXP: results/tables/analyses_<EXP>.md and plots",
    )
    ap.add_argument(
        "--reference",
        default="none",
        metavar="PRUNER[@SPARSITY]",
        help="the reference row of --compare (default: none, the dense model)",
    )
    ap.add_argument(
        "--claims",
        action="append",
        default=[],
        metavar="NAME",
        help="judge the pre-written claims conf/claims/NAME.yaml: "
        "results/tables/claims_NAME.{md,csv}",
    )
    ap.add_argument(
        "--reference-exp",
        default=None,
        metavar="EXP",
        help="look the reference up in this experiment's records (default: the compared one); "
        "writes compare_<EXP>_vs_<REF>_in_<REFEXP>.{csv,md}",
    )
    ap.add_argument(
        "--effects",
        action="append",
        default=[],
        metavar="NAME",
        help="one method's configurations side by side, paired against a reference row "
        "(conf/effects/NAME.yaml): results/tables/effects_NAME.{md,csv}",
    )
    ap.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a static site of the records into DIR: leaderboard, claims, comparisons, "
        "plots, one page per configuration with its attack examples (docs/site.md)",
    )
    args = ap.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.results_dir / "runs").is_dir():
        log.error(
            "error: no records under %s/runs; run `python -m benchmark.run` first", args.results_dir
        )
        return 2
    names = table_names() if "all" in args.table else args.table
    for name in names:  # every spec read before any work: a typo is one line, exit 2
        try:
            load_spec(name, args.variant)
        except SpecError as exc:
            log.error("error: %s", exc)
            return 2
    before = csv_stamps(args.results_dir)
    board = write_leaderboard(args.results_dir)
    report_stale(args.results_dir)
    if names or args.summary or args.compare or args.analyses or args.claims or args.effects:
        everything = load_records(args.results_dir)  # the effects specs select by perturbation
        df = without_noise(everything)
        known = set(df["exp_name"].dropna()) if "exp_name" in df else set()
        for exp in [*args.compare, *args.analyses]:
            if exp not in known:
                log.error("error: no records of experiment %r under %s/runs (experiments: %s)",
                          exp, args.results_dir, ", ".join(sorted(known)) or "none")  # fmt: skip
                return 2
        for exp in args.analyses:
            from benchmark.reporting.analyses import analyses

            log.info("wrote %s", analyses(df, exp, Path(args.results_dir) / "tables"))
        for exp in args.compare:
            from benchmark.reporting.compare import write_compare

            try:
                write_compare(df, exp, args.reference, args.results_dir,
                              reference_exp=args.reference_exp)  # fmt: skip
            except ValueError as exc:
                log.error("error: %s", exc)
                return 2
        from benchmark.reporting.claims import write_claims
        from benchmark.reporting.effects import write_effects

        for writer, specs, frame in ((write_claims, args.claims, df),
                                     (write_effects, args.effects, everything)):  # fmt: skip
            for name in specs:
                try:
                    log.info("wrote %s", writer(frame, name, args.results_dir))
                except ValueError as exc:
                    log.error("error: %s", exc)
                    return 2
        for name in names:
            write_table(df, name, args.results_dir, args.variant, "off")  # mirrored below
        if args.summary:
            write_summary(df, args.summary, args.results_dir)
    if args.site is not None:
        from benchmark.reporting.site import build_site

        log.info("site: %s", build_site(args.results_dir, args.site, board=board))
    mirror_tables_to_wandb(args.results_dir, before, args.wandb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
