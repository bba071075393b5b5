"""``attack=cascade``: several recipes in a fixed order, the strongest first, as one attack.

Robustness is an upper bound set by the attacks tried: a sentence counts as robust only if it
survives every one of them (RobustBench's AutoAttack cascade, HELM's worst case per item).
The cascade attacks each sentence of the fixed seeded sample with its first recipe; a sentence
still classified correctly (not broken) goes on to the next recipe, and so on. A sentence
broken by one recipe is never attacked again, so the cascade costs what the separate runs
cost on the sentences that are still standing, and its Aua is the share of the sample that
survived every recipe.

Every recipe runs with the cascade's own ``num_examples``, ``seed``, ``batch_size``,
``query_budget`` and ``max_seconds_per_example`` (the last two per recipe and sentence), its
``version`` and ``options`` from its own ``conf/attack/<recipe>.yaml`` (options overridden by
``attack.options.<recipe>``). Each sentence is attacked by each recipe under the same seed
(``seed + position``) as in a single-attack run of that recipe, so where the recipes are
deterministic a cascade gives, sentence by sentence, the outcome of the separate runs: broken
by the first recipe whose separate run broke it, survived when every separate run failed.

The work is sentence by sentence (all recipes on one sentence, then the next), so the
per-example log gets one finished line per sentence and a killed cascade resumes from it like
a single attack (:func:`benchmark.attacks.adapter.run_attack`). Each line is a single-attack
line (``result`` is the cascade's: ``successful`` = broken by some recipe, ``failed`` =
survived all, ``skipped`` = misclassified to begin with, ``limit`` = not broken, but some
recipe stopped at a per-example limit) plus ``broken_by`` (the recipe that broke it, None
otherwise) and ``steps`` (per recipe run on it: ``recipe``, ``result``, ``queries``,
``seconds``). ``queries`` and ``seconds`` are summed over the recipes run on the sentence; the
perturbed text and its fields are the breaking recipe's (else the last recipe's).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmark.attacks.adapter import AttackSpec
    from benchmark.attacks.external import AttackResources

CASCADE = "cascade"
# Keys of the cascade config passed unchanged to every recipe.
SHARED_KEYS = ("num_examples", "seed", "query_budget", "batch_size", "max_seconds_per_example",
               "workers")  # fmt: skip
NOT_A_STEP = ("none", "transfer", CASCADE)


def check_recipes(recipes: Any) -> str | None:
    """None when ``recipes`` is a valid cascade (a non-empty list of distinct attack recipe
    names), else what is expected (one line, for the config contract)."""
    from benchmark.attacks.recipes import BUILDERS

    if not isinstance(recipes, list | tuple) or not recipes:
        return f"a non-empty list of attack recipes ({', '.join(BUILDERS)})"
    names = [str(r) for r in recipes]
    for name in names:
        if name not in BUILDERS:
            import difflib

            close = difflib.get_close_matches(name, list(BUILDERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"attack recipes only; {name!r} is not one{hint}; valid: {', '.join(BUILDERS)}"
    if len(set(names)) != len(names):
        return "each recipe at most once"
    return None


@functools.cache
def _recipe_file(name: str) -> tuple[Any, dict[str, Any]]:
    """``(version, options)`` of ``conf/attack/<name>.yaml`` (read as text: no interpolation)."""
    import yaml

    from benchmark.jobs.registry import CONF_DIR

    path = CONF_DIR / "attack" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return (data or {}).get("version", 1), dict((data or {}).get("options") or {})


def step_configs(attack: dict[str, Any]) -> list[dict[str, Any]]:
    """The resolved single-attack config of every recipe of a resolved cascade config, in
    order: the recipe's own ``version`` and ``options`` (those of ``attack.options.<recipe>``
    override), the cascade's shared keys (:data:`SHARED_KEYS`)."""
    problem = check_recipes(list(attack.get("recipes") or []))
    if problem:
        raise ValueError(f"invalid attack.recipes={attack.get('recipes')!r}: expected {problem}")
    overrides = dict(attack.get("options") or {})
    out = []
    for name in attack["recipes"]:
        version, options = _recipe_file(str(name))
        step = {"recipe": str(name), "version": version,
                "options": {**options, **dict(overrides.get(name) or {})}}  # fmt: skip
        step.update({k: attack[k] for k in SHARED_KEYS if k in attack})
        out.append(step)
    return out


def step_specs(spec: AttackSpec) -> list[AttackSpec]:
    """One :class:`AttackSpec` per recipe of the cascade ``spec``, in order."""
    from dataclasses import asdict

    from benchmark.attacks.adapter import AttackSpec

    return [AttackSpec(**step) for step in step_configs(asdict(spec))]


@dataclass
class CascadeAttack:
    """The built recipes of a cascade, in order: ``steps`` = ``[(recipe, textattack.Attack)]``."""

    steps: list[tuple[str, Any]]

    @property
    def build_info(self) -> dict[str, Any]:
        """What each recipe resolved at build time (stored in the record's config)."""
        return {"recipe": CASCADE, "steps": [a.build_info for _, a in self.steps]}

    @property
    def goal_function(self):
        """The first recipe's goal function (its ``model`` is the victim's wrapper, as every
        recipe's: the cascade has one victim)."""
        return self.steps[0][1].goal_function

    def attack_row(
        self, index: int, text: str, label: int, seed: int, position: int | None = None,
        max_seconds: float | None = None, query_budget: int | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Attack one sentence with the recipes in order until one breaks it; its log line."""
        from benchmark.attacks.adapter import attack_one

        rows = []
        for name, attack in self.steps:
            row = attack_one(attack, index, text, label, seed, position,
                             max_seconds=max_seconds, query_budget=query_budget)  # fmt: skip
            rows.append((name, row))
            if row["result"] in ("successful", "skipped"):
                break  # broken, or misclassified from the start: nothing left to attack
        return combine_rows(rows)


def combine_rows(rows: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The cascade's log line from the single-attack lines of the recipes run on a sentence."""
    first, (last_name, last) = rows[0][1], rows[-1]
    kinds = [r["result"] for _, r in rows]
    if last["result"] in ("successful", "skipped"):
        result = last["result"]
    else:
        result = "limit" if "limit" in kinds else "failed"
    queries = [r["queries"] for _, r in rows if r.get("queries") is not None]
    out = {**last, "example_index": first["example_index"], "position": first["position"],
           "label": first["label"], "original": first["original"], "result": result,
           "broken_by": last_name if result == "successful" else None,
           "queries": sum(queries) if queries else None,
           "seconds": sum(r["seconds"] for _, r in rows)}  # fmt: skip
    for key in ("orig_pred", "orig_true_prob"):  # before any attack: the first recipe's look
        if key in first:
            out[key] = first[key]
    out.pop("limit", None)
    if result == "limit":
        out["limit"] = next(r["limit"] for _, r in rows if r["result"] == "limit")
    out["steps"] = [
        {"recipe": name, "result": r["result"], "queries": r.get("queries"),
         "seconds": r["seconds"], **({"limit": r["limit"]} if "limit" in r else {})}
        for name, r in rows
    ]  # fmt: skip
    return out


def build_cascade(spec: AttackSpec, wrapper, resources: AttackResources | None = None):
    """Build every recipe of the cascade ``spec`` against the same victim ``wrapper``."""
    from benchmark.attacks.adapter import build_attack

    return CascadeAttack([(s.recipe, build_attack(s, wrapper, resources))
                          for s in step_specs(spec)])  # fmt: skip


def step_summary(rows: Sequence[dict[str, Any]], recipes: Sequence[str]) -> list[dict[str, Any]]:
    """Per recipe of the cascade, from its log lines: ``attacked`` (sentences it ran on that
    were correctly classified and not yet broken), ``successes`` (sentences it broke),
    ``queries`` (model queries it spent, all sentences), ``limit`` (sentences it stopped at a
    per-example limit), ``seconds``."""
    out = []
    for name in recipes:
        steps = [s for r in rows for s in r.get("steps") or () if s["recipe"] == name]
        ran = [s for s in steps if s["result"] != "skipped"]
        out.append({
            "recipe": name, "attacked": len(ran),
            "successes": sum(s["result"] == "successful" for s in ran),
            "queries": int(sum(s["queries"] or 0 for s in ran)),
            "limit": sum(s["result"] == "limit" for s in ran),
            "seconds": float(sum(s["seconds"] for s in steps)),
        })  # fmt: skip
    return out


def threat_model(attack: dict[str, Any], textattack: str | None = None) -> dict[str, Any]:
    """The threat model of a cascade: the ordered list of its recipes' threat models (each
    with its hash) and ``hash``, a hash of that list (part of the run id)."""
    from benchmark.attacks.recipes import textattack_version
    from benchmark.attacks.recipes import threat_model as single
    from benchmark.records.store import short_hash

    version = textattack or textattack_version()
    steps = [single(step, version) for step in step_configs(attack)]
    block = {
        "recipe": CASCADE, "version": attack.get("version"), "recipes": steps,
        "query_budget": attack.get("query_budget"),
        "max_seconds_per_example": attack.get("max_seconds_per_example"), "textattack": version,
    }  # fmt: skip
    return {**block, "hash": short_hash(block, 10)}


def caption(block: dict[str, Any]) -> str:
    """One caption line for a cascade's threat model: its recipes in order, each with its own
    hash, then the shared limits."""
    steps = " -> ".join(f"{s['recipe']} v{s.get('version')} [{s['hash']}]"
                        for s in block.get("recipes") or [])  # fmt: skip
    return (f"cascade v{block.get('version')} of {steps} (each recipe's own threat-model hash "
            f"under the cascade's limits), query budget {block.get('query_budget') or 'none'}, "
            f"per-example limit {block.get('max_seconds_per_example') or 'none'} s per recipe, "
            f"TextAttack {block.get('textattack')}, threat model {block['hash']}")  # fmt: skip
