"""Analyses the per-example attack logs give at no extra attack cost.

- Aua as a function of the query budget: an example survives a budget q when the attack
  failed, or succeeded only after more than q queries (a search stopped at q would have
  failed); skipped examples (misclassified from the start) never survive.
- Aua as a function of the fraction of words perturbed: an example survives a perturbation
  budget f when the attack failed, or its successful adversarial text changed more than f of
  the words.
- Worst case over attacks: an example counts as robust only if it survives every attack run
  on it (records of one configuration that attacked the same sentences). A cascade record
  (``attack=cascade``) is not one of the attacks of the worst case; its Aua on the same
  sentences stands beside it, and the two agree where the cascade ran the same recipes and
  they are deterministic (docs/attacks.md).

``python -m benchmark.aggregate --analyses EXP`` writes ``results/tables/analyses_<EXP>.md``
and the curves under ``results/tables/plots/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.records.logs import read_rows
from benchmark.reporting.records import identity_differences, identity_without_attack
from benchmark.reporting.stats import wilson_interval


def _kind(row: Mapping[str, Any]) -> str:
    return "successful" if row["result"] == "success" else str(row["result"])


def survives_budget(row: Mapping[str, Any], budget: float) -> bool:
    """Whether the example survives an attack limited to ``budget`` queries."""
    kind = _kind(row)
    if kind == "failed":
        return True
    if kind == "successful":
        return (row.get("queries") or 0) > budget
    return False  # skipped, or stopped by a limit before succeeding: not a survivor


def survives_perturbation(row: Mapping[str, Any], frac: float) -> bool:
    """Whether the example survives when at most ``frac`` of its words may change."""
    kind = _kind(row)
    if kind == "failed":
        return True
    if kind == "successful":
        return (row.get("perturbed_frac") or 0.0) > frac
    return False


def curve(rows: Sequence[Mapping[str, Any]], xs: Iterable[float], survives) -> pd.DataFrame:
    """Aua (with its Wilson interval) at each x."""
    n = len(rows)
    out = []
    for x in xs:
        k = sum(bool(survives(r, x)) for r in rows)
        low, high = wilson_interval(k, n)
        out.append({"x": float(x), "aua": k / n if n else float("nan"), "ci_low": low,
                    "ci_high": high, "n": n})  # fmt: skip
    return pd.DataFrame(out)


def worst_case(logs: Mapping[str, Sequence[Mapping[str, Any]]],
               only: Iterable[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Aua when an example must survive every attack in ``logs`` (attack -> rows), over the
    examples all of them attacked (and in ``only``, when given); ``examples`` lists those."""
    by_attack = {a: {int(r["example_index"]): _kind(r) == "failed" for r in rows}
                 for a, rows in logs.items()}  # fmt: skip
    shared = set.intersection(*(set(v) for v in by_attack.values())) if by_attack else set()
    if only is not None:
        shared &= set(only)
    k = sum(all(v[i] for v in by_attack.values()) for i in shared)
    low, high = wilson_interval(k, len(shared))
    per = {a: sum(v[i] for i in shared) / len(shared) if shared else float("nan")
           for a, v in by_attack.items()}  # fmt: skip
    return {"n": len(shared), "aua_worst": k / len(shared) if shared else float("nan"),
            "ci_low": low, "ci_high": high, "per_attack": per,
            "examples": sorted(shared)}  # fmt: skip


def cascade_against_separate(
    cascade_rows: Sequence[Mapping[str, Any]],
    recipes: Sequence[str],
    separate: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
) -> dict[str, Any]:
    """A cascade's log against the separate runs of its recipes on the same sentences.

    ``separate`` maps a recipe to the logs of its separate runs of the same configuration
    (any sample size; the one holding most of the cascade's sentences is used, and of those the
    one that attacked most of them at the cascade's position in the sample: a sentence's seed is
    ``seed + position``, and a randomized recipe such as DeepWordBug draws its edits from it;
    ``same_position`` counts them per recipe). Returns the
    sentences all of them attacked (``n``), the cascade's Aua and the separate runs' worst case
    on them, the sentences where the two disagree, and the cost of each on those sentences
    (queries, and seconds, which depend on the machine's load). ``missing`` names the recipes
    with no separate run (then nothing is compared)."""
    missing = [r for r in recipes if not separate.get(r)]
    out: dict[str, Any] = {"missing": missing, "n": 0}
    if missing:
        return out
    cascade_ix = {int(r["example_index"]) for r in cascade_rows}
    position = {int(r["example_index"]): r.get("position") for r in cascade_rows}

    def fit(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        ix = {int(r["example_index"]): r.get("position") for r in rows}
        shared = cascade_ix & set(ix)
        same = sum(1 for i in shared if position[i] is not None and ix[i] == position[i])
        return len(shared), same

    pick = {rec: max(range(len(separate[rec])), key=lambda j: fit(separate[rec][j]))
            for rec in recipes}  # fmt: skip
    chosen = {rec: separate[rec][j] for rec, j in pick.items()}
    out["chosen"] = pick  # recipe -> the index of the separate run compared
    out["same_position"] = {rec: fit(rows)[1] for rec, rows in chosen.items()}
    w = worst_case(chosen, only=cascade_ix)
    shared = set(w["examples"])
    if not shared:
        return out
    by_ix = {int(r["example_index"]): r for r in cascade_rows}
    sep = {rec: {int(r["example_index"]): r for r in rows} for rec, rows in chosen.items()}
    survive_sep = {i: all(_kind(sep[rec][i]) == "failed" for rec in sep) for i in shared}
    survive_cas = {i: _kind(by_ix[i]) == "failed" for i in shared}
    disagree = sorted(i for i in shared if survive_sep[i] != survive_cas[i])

    def cost(rows_by_ix: Mapping[int, Mapping[str, Any]], key: str) -> float:
        return float(sum(rows_by_ix[i].get(key) or 0 for i in shared))

    k = sum(survive_cas.values())
    low, high = wilson_interval(k, len(shared))
    out.update(
        n=len(shared), aua_cascade=k / len(shared), ci_low=low, ci_high=high,
        aua_worst=w["aua_worst"], disagree=disagree,
        queries_cascade=cost(by_ix, "queries"),
        queries_separate=sum(cost(v, "queries") for v in sep.values()),
        seconds_cascade=cost(by_ix, "seconds"),
        seconds_separate=sum(cost(v, "seconds") for v in sep.values()),
    )  # fmt: skip
    return out


def analyses(df: pd.DataFrame, exp: str, out_dir: Path) -> Path:
    """Budget and perturbation curves per (pruner, sparsity, attack) and the worst case over
    attacks per (pruner, sparsity), for the records of ``exp`` that have a log (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = df[(df.get("exp_name") == exp) & (df.get("status") == "ok")]
    sel = sel[sel["_log"].notna()] if "_log" in sel else sel.iloc[0:0]
    sel = sel[sel["seed"] == 0] if len(sel) else sel
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    budgets = [5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500]
    fracs = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
    lines = [f"# Per-example analyses: {exp}", "",
             "From the per-example attack logs of seed 0 (no extra attack run). Aua in %, "
             "95% Wilson interval in brackets; n = examples.", ""]  # fmt: skip
    if sel.empty:
        lines.append("No record of this experiment has a per-example log yet.")
        path = out_dir / f"analyses_{exp}.md"
        path.write_text("\n".join(lines) + "\n")
        return path
    from benchmark.reporting.plots import file_slug

    # a configuration without its attack: the key that puts a record's attacks side by side
    sel = sel.assign(
        _cfg=[identity_without_attack(i) for i in sel.get("_identity", [""] * len(sel))]
    )
    logs = _logs_by_configuration(sel)
    for attack in sorted({a for v in logs.values() for a in v}):
        for title, xs, fn, xlabel in (
            ("query budget", budgets, survives_budget, "queries"),
            ("perturbed-word budget", fracs, survives_perturbation, "fraction of words"),
        ):
            lines += [f"## Aua against the {title}: {attack}", "",
                      "| pruner | sparsity | n | " + " | ".join(str(x) for x in xs) + " |",
                      "|---|---:|---:|" + "---:|" * len(xs)]  # fmt: skip
            fig, ax = plt.subplots(figsize=(6, 4))
            for (pruner, sparsity, n, _cfg), by_attack in logs.items():
                if attack not in by_attack:
                    continue
                c = curve(by_attack[attack], xs, fn)
                cells = [
                    f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                    for a, lo, hi in zip(c["aua"], c["ci_low"], c["ci_high"], strict=True)
                ]
                lines.append(f"| {pruner} | {sparsity:g} | {n} | " + " | ".join(cells) + " |")
                err = [100 * (c["aua"] - c["ci_low"]), 100 * (c["ci_high"] - c["aua"])]
                ax.errorbar(c["x"], 100 * c["aua"], yerr=err, label=f"{pruner} {sparsity:g}",
                            capsize=2, marker="o", ms=3)  # fmt: skip
            ax.set_xlabel(xlabel)
            ax.set_ylabel("Aua %")
            ax.set_ylim(0, 100)
            ax.set_title(f"{exp}: Aua vs {title} ({attack})")
            ax.legend(fontsize=7)
            slug = "budget" if xlabel == "queries" else "perturbation"
            fig.tight_layout()
            name = f"analyses_{exp}_{file_slug(attack)}_{slug}.png"
            fig.savefig(out_dir / "plots" / name, dpi=110)
            plt.close(fig)
            lines.append("")
    lines += ["## Worst case over attacks", "",
              "An example is robust only if it survives every attack run on it (the separate "
              "runs; `cascade` = Aua of the cascade record on the same examples, where one "
              "exists).", "",
              "| pruner | sparsity | attacks | n | Aua worst case | per attack | cascade |",
              "|---|---:|---|---:|---|---|---:|"]  # fmt: skip
    for (pruner, sparsity, _, _cfg), all_logs in logs.items():
        by_attack = {a: rows for a, rows in all_logs.items() if a != "cascade"}
        if len(by_attack) < 2:
            continue
        w = worst_case(by_attack)
        per = ", ".join(f"{a} {100 * v:.1f}" for a, v in w["per_attack"].items())
        cascade = ""
        if "cascade" in all_logs:
            c = worst_case({"cascade": all_logs["cascade"]}, only=w["examples"])
            cascade = f"{100 * c['aua_worst']:.1f} (n={c['n']})"
        lines.append(f"| {pruner} | {sparsity:g} | {', '.join(by_attack)} | {w['n']} | "
                     f"{100 * w['aua_worst']:.1f} [{100 * w['ci_low']:.1f}, "
                     f"{100 * w['ci_high']:.1f}] | {per} | {cascade} |")  # fmt: skip
    lines += _cascade_section(sel)
    path = out_dir / f"analyses_{exp}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cascade_section(sel: pd.DataFrame) -> list[str]:
    """Each cascade record against the separate runs of its recipes, same configuration
    (``sel`` has the ``_cfg`` column of :func:`analyses`)."""
    import json

    from benchmark.reporting.plots import display_names

    cascades = sel[sel["attack"] == "cascade"]
    if cascades.empty:
        return []
    name = display_names()
    lines = ["", "## The cascade against the separate runs", "",
             "Per cascade record: the sentences that it and a separate run of each of its recipes "
             "(same configuration, any sample size) attacked; the cascade's Aua [95% Wilson] and "
             "the separate runs' worst case on them, the sentences where the two disagree (a "
             "recipe that is not deterministic, a per-example limit, or a separate run from "
             "another dense model: the dense keys are named), and the cost of each on those "
             "sentences: queries, and seconds (load-dependent: the runs ran at different times). "
             "`same seed`: per recipe, how many of the sentences its separate run attacked at "
             "the cascade's position in the sample, i.e. under the same per-sentence seed "
             "(`seed + position`; a separate run on the whole split numbers them otherwise).",
             "",
             "| pruner | sparsity | recipes | n | cascade Aua | worst case of separate runs | "
             "disagree | same seed | queries cascade / separate | seconds cascade / separate | "
             "dense keys |",
             "|---|---:|---|---:|---|---:|---|---|---|---|---|"]  # fmt: skip
    for _, rec in cascades.sort_values(["pruner", "sparsity_target"]).iterrows():
        attack = json.loads(rec["_identity"] or "{}").get("attack") or {}
        recipes = list(attack.get("recipes") or [])
        same = sel[(sel["_cfg"] == rec["_cfg"]) & sel["attack"].isin(recipes)]
        separate: dict[str, list] = {}
        keys_of: dict[str, list] = {}
        for _, r in same.iterrows():
            separate.setdefault(r["attack"], []).append(read_rows(Path(r["_log"])))
            keys_of.setdefault(r["attack"], []).append(r.get("dense_info.key"))
        c = cascade_against_separate(read_rows(Path(rec["_log"])), recipes, separate)
        label = (
            f"{name('method', rec['pruner'])} | {rec['sparsity_target']:g} | {', '.join(recipes)}"
        )
        if c["missing"] or not c["n"]:
            why = (
                f"no separate run of {', '.join(c['missing'])}"
                if c["missing"]
                else "no shared sentences"
            )
            lines.append(f"| {label} | | {why} | | | | | | |")
            continue
        used = [keys_of[r][j] for r, j in c["chosen"].items()]  # the compared runs' dense models
        keys = sorted({str(k) for k in [rec.get("dense_info.key"), *used] if k})
        dis = ", ".join(str(i) for i in c["disagree"][:8]) + (
            " ..." if len(c["disagree"]) > 8 else ""
        )
        lines.append(
            f"| {label} | {c['n']} | {100 * c['aua_cascade']:.1f} [{100 * c['ci_low']:.1f}, "
            f"{100 * c['ci_high']:.1f}] | {100 * c['aua_worst']:.1f} | "
            f"{len(c['disagree'])}{f' ({dis})' if dis else ''} | "
            f"{', '.join(f'{r} {k}' for r, k in c['same_position'].items())} | "
            f"{c['queries_cascade']:,.0f} / {c['queries_separate']:,.0f} | "
            f"{c['seconds_cascade']:,.0f} / {c['seconds_separate']:,.0f} | {', '.join(keys)} |"
        )
    return lines


def _logs_by_configuration(sel: pd.DataFrame) -> dict[tuple, dict[str, list]]:
    """``(pruner label, sparsity, n, configuration) -> {attack: log rows}``: one entry per
    configuration (two configurations of one pruner and sparsity, e.g. unstructured and 2:4,
    never share an entry); the label is the display name, with the differing keys when one
    (pruner, sparsity, n) has several configurations. ``sel`` has the ``_cfg`` column of
    :func:`analyses`."""
    from benchmark.reporting.plots import display_names

    name = display_names()
    logs: dict[tuple, dict[str, list]] = {}
    order = ["pruner", "sparsity_target", "n_total", "_cfg", "attack"]
    for (pruner, sparsity, n), group in sel.sort_values(order).groupby(
        ["pruner", "sparsity_target", "n_total"], sort=False
    ):
        cfgs = list(dict.fromkeys(group["_cfg"]))
        differs = identity_differences([c or "{}" for c in cfgs]) if len(cfgs) > 1 else {}
        for _, rec in group.iterrows():
            text = differs.get(rec["_cfg"] or "{}", "")
            label = name("method", pruner) + (f" ({text})" if text else "")
            key = (label, float(sparsity), int(n), rec["_cfg"])
            logs.setdefault(key, {})[rec["attack"]] = read_rows(Path(rec["_log"]))
    return logs


def budget_curve_points(rows: Sequence[Mapping[str, Any]], budgets: Sequence[float]) -> np.ndarray:
    """Aua at each budget (a plain array, for tests and callers)."""
    return curve(rows, budgets, survives_budget)["aua"].to_numpy()
