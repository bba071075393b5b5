"""One prepared check for a GPU machine: pruner, training and inference speed, 2:4 speed-up.

Meant for a machine that has only torch and transformers (no hydra-core, omegaconf,
textattack, datasets, no network, no ../shared): it imports only the project modules that
need torch/transformers and runs the pruners and training steps through their Python API on
RANDOMLY initialised BERT-style models (``BertConfig``) with synthetic sentences over a tiny
word list, tokenized by a WordPiece tokenizer built offline (as ``build_tiny_bert`` does).

Parts, in order (each timed, each failure recorded without stopping the others; the report
is rewritten after every part, so a run cut short still leaves what it measured):

1. preflight: versions, CUDA, GPU, the project imports (and that hydra/omegaconf/textattack
   were not pulled in);
2. pruners on a BERT-base-sized model, whole model, 128 synthetic calibration sequences, 50%:
   AKR (lowrank float64, lowrank float32, and ``_obs_fast`` blocked float64), SparseGPT,
   Wanda: wall seconds and ratios to SparseGPT;
3. AKR's GPU path (``obs_impl: batched``) on a BERT-base-sized model at 50% with the default
   job's options: wall seconds, the OBS solver's share, and the masks of the first block's
   layers against the float64 lowrank solver on the same inputs (goal: under 60 s on an H100);
4. training: dense fine-tune steps/s (``benchmark.training.loop.train``) and RobustT mask
   learning steps/s (``RobustTicketPruner.learn_scores``), MiniLM- and BERT-base-sized;
5. raw forward throughput (``benchmark.jobs.latency.inference_ms``);
6. 2:4 semi-structured sparsity of a BERT-base-sized encoder: magnitude 2:4 on the prunable
   linears, ``torch.sparse.to_sparse_semi_structured``, fp16 and bf16, batch 1/16/64 x 128,
   outputs checked against the masked dense model, kernel backend named (CUDA only).

``--smoke`` runs every part on CPU with tiny sizes (CUDA-only parts: "skipped: no CUDA").

    bash scripts/device_check.sh --out DIR            # the GPU run (about 8 minutes at most)
    python scripts/device_check.py --smoke --out DIR  # CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORBIDDEN = ("hydra", "omegaconf", "textattack")
PROJECT_MODULES = (
    "benchmark.models.loading", "benchmark.models.structure", "benchmark.pruners.base",
    "benchmark.pruners._layerwise", "benchmark.pruners.magnitude", "benchmark.pruners.akr",
    "benchmark.pruners._obs_fast", "benchmark.pruners.sparsegpt", "benchmark.pruners.wanda",
    "benchmark.pruners.rticket", "benchmark.training.loop", "benchmark.training.freelb",
    "benchmark.jobs.latency", "benchmark.data.tiny",
)  # fmt: skip

SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "minilm": (384, 6, 12, 1536),
    "bert-base": (768, 12, 12, 3072),
    "tiny": (64, 2, 2, 128),
}


class PartTimeout(Exception):
    """A part ran past its time limit."""


@contextmanager
def time_limit(seconds: int):
    """Raise :class:`PartTimeout` in the main thread after ``seconds`` (SIGALRM)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(_sig, _frame):
        raise PartTimeout(f"time limit of {seconds} s reached")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Report:
    """Collects the parts and rewrites device_report.{json,md} after each."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out = out
        self.data: dict = {"meta": meta, "parts": {}}
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, entry: dict) -> None:
        self.data["parts"][name] = entry
        self.write()

    def write(self) -> None:
        (self.out / "device_report.json").write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / "device_report.md").write_text(render_md(self.data))


def render_md(data: dict) -> str:
    meta = data["meta"]
    lines = ["# Device check", "", f"Command: `{meta.get('command')}`", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
    for name, part in data["parts"].items():
        lines += ["", f"## {name}", "", f"status: {part.get('status')}; "
                  f"{part.get('seconds', 0):.1f} s"]  # fmt: skip
        if part.get("error"):
            lines += ["", "```", str(part["error"])[-1500:], "```"]
        rows = part.get("rows")
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for r in rows:
                lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
        for k, v in part.items():
            if k not in ("status", "seconds", "rows", "error"):
                lines.append(f"- {k}: {_fmt(v)}")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_part(report: Report, name: str, fn, limit: int, deadline: float) -> None:
    """Run one part under a time limit; record ok / skipped / error with its seconds."""
    left = int(deadline - time.monotonic())
    if left < 10:
        report.add(name, {"status": "skipped: overall time budget used up", "seconds": 0.0})
        print(f"[{name}] skipped (budget)", flush=True)
        return
    limit = min(limit, left) if limit else 0  # 0: the part limits itself
    print(f"[{name}] start (limit {limit} s)", flush=True)
    t0 = time.perf_counter()
    entry: dict = {}
    try:
        with time_limit(limit):
            entry = fn() or {}
        entry.setdefault("status", "ok")
    except PartTimeout as exc:
        entry = {**entry, "status": f"timeout: {exc}"}
    except Exception as exc:
        entry = {**entry, "status": "error", "error": "".join(traceback.format_exception(exc))}
    entry["seconds"] = time.perf_counter() - t0
    report.add(name, entry)
    print(f"[{name}] {entry['status']} in {entry['seconds']:.1f} s", flush=True)


# -- synthetic data and models ----------------------------------------------------------------
def build_tokenizer(workdir: Path):
    """A WordPiece tokenizer over the tiny task's words (built offline)."""
    try:
        from transformers import BertTokenizerFast
    except ImportError:  # transformers 5 may keep only the one (tokenizers-backed) class
        from transformers import BertTokenizer as BertTokenizerFast

    from benchmark.data.tiny import VOCAB

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab = list(dict.fromkeys(vocab))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(workdir / "vocab.txt"), do_lower_case=True)


def synthetic_examples(n: int, words: tuple[int, int], seed: int = 0) -> list[tuple[str, int]]:
    """``n`` (text, label) pairs of random tiny-vocabulary words (label: a positive word)."""
    from benchmark.data.tiny import FILLER, NEGATIVE, POSITIVE

    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        ws = [rng.choice(FILLER) for _ in range(rng.randint(*words))]
        ws.insert(rng.randrange(len(ws) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        out.append((" ".join(ws), label))
    return out


def build_model(size: str, device, seed: int = 0, vocab_size: int = 30522):
    """A randomly initialised BertForSequenceClassification of the named size."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers, heads, inter = SIZES[size]
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=inter, num_labels=2,
                     max_position_embeddings=512)  # fmt: skip
    return BertForSequenceClassification(cfg).to(device)


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# -- parts --------------------------------------------------------------------------------------
def preflight(args) -> dict:
    import torch
    import transformers

    imported, failed = [], {}
    import importlib

    for mod in PROJECT_MODULES:
        try:
            importlib.import_module(mod)
            imported.append(mod)
        except Exception as exc:
            failed[mod] = f"{type(exc).__name__}: {exc}"
    pulled = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN))
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "device": args.device,
        "imports_ok": len(imported),
        "imports_failed": failed or "none",
        "hydra/omegaconf/textattack imported": pulled or "none",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            info["cusparselt"] = torch.backends.cusparselt.version()
        except Exception as exc:
            info["cusparselt"] = f"unavailable ({exc})"
    else:
        info["threads"] = torch.get_num_threads()
    for k, v in info.items():
        print(f"  {k}: {v}", flush=True)
    if failed:
        return {**info, "status": "error", "error": json.dumps(failed, indent=1)}
    return info


def prune_part(args, tok, deadline: float) -> dict:
    import torch

    from benchmark.pruners import _obs_fast, akr
    from benchmark.pruners.akr import AKRPruner
    from benchmark.pruners.base import PruneData, apply_masks, measure_sparsity
    from benchmark.pruners.sparsegpt import SparseGPTPruner
    from benchmark.pruners.wanda import WandaPruner

    dev = torch.device(args.device)
    size = "tiny" if args.smoke else "bert-base"
    nsamples = 16 if args.smoke else 128
    words = (20, 60)
    data = PruneData(tokenizer=tok, train=synthetic_examples(4 * nsamples, words, seed=1),
                     max_length=64, device=dev, seed=0)  # fmt: skip
    base = build_model(size, dev)
    chunk_mb = 256 if dev.type == "cpu" else 8192
    methods = [
        ("sparsegpt", lambda: SparseGPTPruner(nsamples=nsamples, max_length=64), None),
        ("wanda", lambda: WandaPruner(nsamples=nsamples, max_length=64), None),
        (
            "akr lowrank float32",
            lambda: AKRPruner(nsamples=nsamples, obs_dtype="float32", chunk_mb=chunk_mb),
            None,
        ),
        (
            "akr blocked float64 (_obs_fast)",
            lambda: AKRPruner(nsamples=nsamples, chunk_mb=chunk_mb),
            "fast",
        ),
        (
            "akr lowrank float64 (the class default, the reference)",
            lambda: AKRPruner(nsamples=nsamples, chunk_mb=chunk_mb),
            None,
        ),
    ]
    rows = []
    original = akr.obs_prune
    for name, make, patch in methods:
        # one alarm at a time: each run gets its own limit, never past the overall deadline
        per_method = min(int(args.prune_limit), int(deadline - time.monotonic()) - 5)
        row = {"method": name}
        if per_method < 10:
            rows.append({**row, "wall_s": "skipped: overall time budget used up"})
            continue
        model = copy.deepcopy(base)
        if patch == "fast":

            def fast(weight, hessian, sparsity, nm=None, protect_last=False, impl="lowrank",
                     dtype=torch.float64, chunk_bytes=256 * 2**20, **kw):  # fmt: skip
                return _obs_fast.obs_prune(weight, hessian, sparsity, nm=nm,
                                           protect_last=protect_last, impl="blocked",
                                           dtype=dtype, chunk_bytes=chunk_bytes, **kw)  # fmt: skip

            akr.obs_prune = fast
        try:
            with time_limit(per_method):
                sync(dev)
                t0 = time.perf_counter()
                masks = make().prune(model, data, 0.5)
                sync(dev)
                row["wall_s"] = time.perf_counter() - t0
            apply_masks(model, masks, permanent=True)
            row["sparsity"] = round(float(measure_sparsity(model)), 4)
        except PartTimeout:
            row["wall_s"] = f"> {per_method} (stopped)"
        except Exception as exc:
            row["wall_s"] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            akr.obs_prune = original
        rows.append(row)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    ref = next((r["wall_s"] for r in rows if r["method"] == "sparsegpt"), None)
    for r in rows:
        if isinstance(r.get("wall_s"), float) and isinstance(ref, float):
            r["x sparsegpt"] = r["wall_s"] / ref
    return {
        "rows": rows,
        "model": f"{size} (random init), whole model",
        "calibration": f"{nsamples} synthetic sequences, max_length 64",
        "sparsity": 0.5,
    }


AKR_V2 = dict(calib_padding="max_length", bias_prunable=True, obs_damp=1e-4)
"""The default job's AKR options (conf/pruner/akr.yaml, version 2) beyond the constructor's."""


def akr_gpu_part(args, tok) -> dict:
    """AKR at 50% on a BERT-base-sized model through the GPU path (``obs_impl: batched``).

    Times the whole pruning and, inside it, the OBS solver calls; checks the masks of the first
    ``--akr-check-layers`` layers against the float64 lowrank solver (``akr.obs_prune``) on
    the same W-bar and H (the reference's time is not counted). The issue's goal: under 60 s
    on one H100.
    """
    import torch

    from benchmark.pruners import _obs_fast, akr
    from benchmark.pruners.akr import AKRPruner
    from benchmark.pruners.base import PruneData

    dev = torch.device(args.device)
    size = "tiny" if args.smoke else "bert-base"
    nsamples = 16 if args.smoke else 128
    check = 10**6 if args.smoke else args.akr_check_layers
    data = PruneData(tokenizer=tok, train=synthetic_examples(4 * nsamples, (20, 60), seed=1),
                     max_length=64, device=dev, seed=0)  # fmt: skip
    model = build_model(size, dev)
    real = _obs_fast.obs_prune
    st = {"obs_s": 0.0, "ref_s": 0.0, "calls": 0, "checked": 0, "entries": 0, "equal": 0,
          "w_diff": 0.0, "batch_rows": {}}  # fmt: skip

    def timed(weight, hessian, sparsity, **kw):
        sync(dev)
        t0 = time.perf_counter()
        out = real(weight, hessian, sparsity, **kw)
        sync(dev)
        st["obs_s"] += time.perf_counter() - t0
        st["calls"] += 1
        d_out, d = weight.shape
        budget = _obs_fast.batch_bytes(weight.device, kw.get("chunk_bytes", 256 * 2**20))
        st["batch_rows"][f"{d_out}x{d}"] = _obs_fast.chunk_rows(
            d_out, d, 0, "batched", torch.float64, budget
        )
        if st["calls"] <= check:
            ref_kw = {k: kw[k] for k in ("nm", "protect_last", "zeros_per_row", "official_damp",
                                         "damp", "chunk_bytes") if k in kw}  # fmt: skip
            t1 = time.perf_counter()
            ref = akr.obs_prune(weight, hessian, sparsity, impl="lowrank", dtype=torch.float64,
                                **ref_kw)  # fmt: skip
            sync(dev)
            st["ref_s"] += time.perf_counter() - t1
            st["checked"] += 1
            st["entries"] += ref[1].numel()
            st["equal"] += int((ref[1] == out[1]).sum())
            st["w_diff"] = max(st["w_diff"], float((ref[0] - out[0]).abs().max()))
        return out

    chunk_mb = 256 if dev.type == "cpu" else 8192  # the lowrank reference's chunk on a GPU
    pruner = AKRPruner(nsamples=nsamples, obs_impl="batched", chunk_mb=chunk_mb, **AKR_V2)
    _obs_fast.obs_prune = timed
    try:
        sync(dev)
        t0 = time.perf_counter()
        masks = pruner.prune(model, data, 0.5)
        sync(dev)
        wall = time.perf_counter() - t0
    finally:
        _obs_fast.obs_prune = real
    wall -= st["ref_s"]  # the checks against the reference are not AKR's time
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    row = {
        "model": f"{size} (random init), whole model, 50%",
        "wall_s": wall,
        "obs_s": st["obs_s"],
        "other_s (passes, statistics, ridge)": wall - st["obs_s"],
        "reference checks_s (not in wall_s)": st["ref_s"],
        "sparsity": round(1 - kept / total, 4),
        "layers": st["calls"],
        "layers checked": st["checked"],
        "mask entries equal to lowrank f64": st["equal"] / max(st["entries"], 1),
        "max abs w diff": st["w_diff"],
    }
    if dev.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return {
        "rows": [row],
        "batch rows per layer shape": st["batch_rows"],
        "calibration": f"{nsamples} synthetic sequences padded to 64 (version 2 options)",
        "goal": "BERT-base AKR at 50% under 60 s on one H100 (wall_s)",
    }


def training_part(args, tok) -> dict:
    import torch

    from benchmark.pruners.base import PruneData
    from benchmark.pruners.rticket import RobustTicketPruner
    from benchmark.training import loop

    loop.set_progress(False)
    dev = torch.device(args.device)
    sizes = ["tiny"] if args.smoke else ["minilm", "bert-base"]
    steps = 2 if args.smoke else args.train_steps
    examples = synthetic_examples(64 if args.smoke else 2000, (10, 40), seed=2)
    rows = []
    for size in sizes:
        model = build_model(size, dev, vocab_size=tok.vocab_size)
        cfg_warm = loop.TrainConfig(max_steps=2, batch_size=32, seed=0)
        loop.train(model, tok, examples, cfg_warm, 64, dev)  # warm-up (kernels, allocator)
        sync(dev)
        stats = loop.train(model, tok, examples, loop.TrainConfig(max_steps=steps, batch_size=32),
                           64, dev)  # fmt: skip
        sync(dev)
        rows.append(
            {
                "model": size,
                "what": "dense fine-tune (AdamW, batch 32, max_len 64)",
                "steps": stats["steps"],
                "steps_per_s": stats["steps"] / stats["seconds"],
            }
        )
        pr = RobustTicketPruner(mask_max_steps=steps, batch_size=32,
                                holdout_examples=32)  # fmt: skip
        data = PruneData(tokenizer=tok, train=examples, max_length=64, device=dev, seed=0)
        pr.learn_scores(model, data)
        ml = pr.info["mask_learning"]
        rows.append(
            {
                "model": size,
                "what": "RobustT mask learning (FreeLB K=5, batch 32)",
                "steps": ml["steps"],
                "steps_per_s": ml["steps"] / ml["seconds"],
            }
        )
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "note": "RobustT steps/s includes one held-out evaluation (32)"}


def forward_part(args, tok) -> dict:
    import torch

    from benchmark.jobs.latency import inference_ms

    dev = torch.device(args.device)
    sizes = ["tiny"] if args.smoke else ["minilm", "bert-base"]
    bs, length = (4, 32) if args.smoke else (64, 128)
    dtypes = [torch.float32] + ([torch.bfloat16, torch.float16] if dev.type == "cuda" else [])
    rows = []
    for size in sizes:
        for dtype in dtypes:
            model = build_model(size, dev).to(dtype)
            ids = torch.randint(5, 1000, (bs, length), device=dev)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            r = inference_ms(model, batch, dev, repeats=3 if args.smoke else 20)
            rows.append({"model": size, "dtype": str(dtype).replace("torch.", ""),
                         "batch x len": f"{bs}x{length}", "median_ms": r["median_ms"],
                         "sequences_per_s": bs / r["median_ms"] * 1000})  # fmt: skip
            del model
    return {"rows": rows}


def semi_structured_part(args, tok) -> dict:
    import torch

    if args.device == "cpu" or not torch.cuda.is_available():
        return {"status": "skipped: no CUDA"}
    from torch import nn
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    from benchmark.jobs.latency import inference_ms
    from benchmark.models.structure import prunable_linears
    from benchmark.pruners.magnitude import nm_mask

    dev = torch.device("cuda")
    rows = []
    backends = ["default"]
    if hasattr(SparseSemiStructuredTensor, "_FORCE_CUTLASS"):
        backends.append("cutlass (forced)")
    for dtype in (torch.float16, torch.bfloat16):
        dense = build_model("bert-base", dev).to(dtype).eval()
        with torch.no_grad():
            for lin in prunable_linears(dense).values():
                lin.weight.mul_(nm_mask(lin.weight.abs().float(), 2, 4).to(dtype))
        for backend in backends:
            force = backend.startswith("cutlass")
            old_force = getattr(SparseSemiStructuredTensor, "_FORCE_CUTLASS", False)
            SparseSemiStructuredTensor._FORCE_CUTLASS = force
            try:
                sparse = copy.deepcopy(dense)
                kind = None
                for lin in prunable_linears(sparse).values():
                    lin.weight = nn.Parameter(to_sparse_semi_structured(lin.weight.detach()),
                                              requires_grad=False)  # fmt: skip
                    kind = type(lin.weight.data).__name__ if kind is None else kind
                for bs in (1, 16, 64):
                    ids = torch.randint(5, 1000, (bs, 128), device=dev)
                    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                    with torch.inference_mode():
                        ref = dense(**batch).logits.float()
                        got = sparse(**batch).logits.float()
                    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
                    td = inference_ms(dense, batch, dev, repeats=20)["median_ms"]
                    ts = inference_ms(sparse, batch, dev, repeats=20)["median_ms"]
                    rows.append({"dtype": str(dtype).replace("torch.", ""), "backend": backend,
                                 "kernel class": kind, "batch x len": f"{bs}x128",
                                 "dense_ms": td, "sparse_ms": ts, "speed-up": td / ts,
                                 "max rel logit diff": err})  # fmt: skip
                del sparse
            except Exception as exc:
                rows.append({"dtype": str(dtype), "backend": backend,
                             "error": f"{type(exc).__name__}: {str(exc)[:300]}"})  # fmt: skip
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = old_force
        del dense
        torch.cuda.empty_cache()
    return {
        "rows": rows,
        "model": "bert-base-sized encoder (random), 2:4 magnitude on the "
        "72 prunable linears; speed-up = masked dense / semi-structured forward",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes")
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu in smoke)")
    ap.add_argument("--budget-s", type=int, default=None, help="overall (default 450; smoke 280)")
    ap.add_argument("--prune-limit", type=int, default=150, help="seconds per pruner run")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--akr-check-layers", type=int, default=6,
                    help="AKR GPU part: layers checked against lowrank (smoke: all)")  # fmt: skip
    args = ap.parse_args()
    t_start = time.monotonic()
    import torch

    if args.device is None:
        args.device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    budget = args.budget_s or (280 if args.smoke else 450)
    deadline = t_start + budget
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "host": platform.node(), "machine": platform.machine(), "smoke": args.smoke,
            "budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    report = Report(args.out, meta)
    run_part(report, "preflight", lambda: preflight(args), 60, deadline)
    if report.data["parts"]["preflight"]["status"] != "ok":
        print("preflight failed; see the report", flush=True)
        sys.exit(2)
    tok = build_tokenizer(args.out / "tokenizer")
    run_part(report, "akr gpu path", lambda: akr_gpu_part(args, tok), 200, deadline)
    run_part(report, "semi-structured 2:4", lambda: semi_structured_part(args, tok), 120,
             deadline)  # fmt: skip
    run_part(report, "forward throughput", lambda: forward_part(args, tok), 60, deadline)
    run_part(report, "training steps", lambda: training_part(args, tok), 120, deadline)
    # no part-level alarm here: prune_part limits each pruner run itself
    run_part(report, "pruners", lambda: prune_part(args, tok, deadline), 0, deadline)
    report.data["meta"]["total_s"] = round(time.monotonic() - t_start, 1)
    report.write()
    print(f"report: {args.out / 'device_report.md'}", flush=True)


if __name__ == "__main__":
    main()
