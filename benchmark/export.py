"""``rpb export RUN_ID --out DIR`` (also ``python -m benchmark.export``): a record's pruned
model as a Hugging Face folder.

The record is found under ``paths.results_dir`` and its weights under ``paths.cache_dir``,
with the same ``paths.*`` overrides (and ``conf/local/default.yaml``) as a run: the dense model
of ``.cache/dense/<dense_info.key>`` (architecture, tokenizer) with the pruned weights of
``.cache/pruned/<prune_info.key>`` loaded into it. A missing cache entry is one line naming the
command that rebuilds it. The folder holds ``model.safetensors``, ``config.json``, the tokenizer
files, ``README.md`` (a model card: the record's numbers with their intervals, the threat
model, the sparsity of every prunable layer, the command that made it, its provenance) and
``rpb_record.json`` (the record itself), and loads with
``AutoModelForSequenceClassification.from_pretrained(DIR)`` as it is.

Pruned weights are stored dense, with zeros where weights were removed (a Hugging Face config
has no place for a mask). A structured record (heads and neurons physically removed) is
exported the same way, as masked-dense weights: each removed head's query, key and value rows
and its output columns, and each removed neuron's rows and columns, are zero, which computes
what the smaller model computes (a ``BertConfig`` cannot hold per-layer widths).

``--push-to-hub REPO`` uploads the folder with ``huggingface_hub`` (a token from
``huggingface-cli login`` or ``HF_TOKEN``); where the Hub cannot be reached it says so in one
line and the folder stays on disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

log = logging.getLogger("benchmark.export")
ROOT = Path(__file__).resolve().parents[1]
CARD_NAME = "README.md"
RECORD_NAME = "rpb_record.json"
TOP_LEVEL = ("eval_sample", "eval_sample_seed", "max_eval_examples", "precision")
GROUPS = ("model", "dataset", "dense", "pruner", "attack")


# ---------------------------------------------------------------------------------------------
# Where things are


def resolve_paths(overrides: list[str]) -> dict[str, Any]:
    """The resolved ``paths`` group of a run given these ``paths.*`` overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    bad = [o for o in overrides if not o.startswith("paths.") or "=" not in o]
    if bad:
        raise UserError(f"export takes only paths.* overrides (key=value), got {bad[0]!r}")
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("run", overrides=overrides)
    except HydraException as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    return OmegaConf.to_container(cfg.paths, resolve=True)


def find_record(results_dir: Path, run_id: str) -> tuple[Path, dict[str, Any]]:
    """The ``ok`` record ``<results_dir>/runs/*/<run_id>.json``."""
    found = sorted(Path(results_dir).glob(f"runs/*/{run_id}.json"))
    if not found:
        raise UserError(f"no record {run_id!r} under {results_dir}/runs (paths.results_dir)")
    path = found[0]
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"record {path} is unreadable: {exc}") from None
    if rec.get("status") != "ok":
        raise UserError(
            f"record {path} has status {rec.get('status')!r}, not ok: nothing to export"
        )
    return path, rec


# ---------------------------------------------------------------------------------------------
# The command that made a record


def _value(v: Any) -> str:
    """A value as a Hydra override writes it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    text = str(v)
    return text if all(c.isalnum() or c in "._-:/+@" for c in text) and text else repr(text)


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}."))
    return out


def command_of(rec: dict[str, Any], paths: list[str] | None = None) -> tuple[str, str]:
    """``(command, check)``: the ``rpb`` command that runs this record's job, and whether it
    was checked. The command is the experiment preset (when the record's ``exp_name`` is one),
    the option of every group, sparsity and seed, plus every value of the record's config that
    the composed config of those does not give (leaf by leaf over the groups and the top-level
    keys of the run id). ``check`` says whether composing the command here (with ``paths``, the
    export's own ``paths.*`` overrides) gives the record's run id."""
    from omegaconf import OmegaConf

    from benchmark.jobs.plan import identify

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))
    cfg = rec.get("cfg") or {}
    choices = cfg.get("choices") or {}
    exp = str(rec.get("exp_name") or cfg.get("exp_name") or "")
    base = []
    if (ROOT / "conf" / "experiment" / f"{exp}.yaml").is_file():
        base.append(f"experiment={exp}")
    elif exp:
        base.append(f"exp_name={exp}")
    base += [f"{g}={choices[g]}" for g in GROUPS if choices.get(g)]
    budget = (cfg.get("budget") or {}).get("name")
    if budget and budget != "paper":
        base.append(f"budget={budget}")
    base += [f"sparsity={_value(rec.get('sparsity_target'))}", f"seed={rec.get('seed')}"]
    extra: list[str] = []
    try:
        composed = identify([*base, *(paths or [])]).resolved
        for group in GROUPS:
            have, want = _leaves(composed.get(group) or {}), _leaves(cfg.get(group) or {})
            for key, val in want.items():
                if key in ("", "_target_", "seed"):
                    continue
                if key in have and have[key] != val:
                    extra.append(f"{group}.{key}={_value(val)}")
                elif key not in have and val is not None:
                    extra.append(f"+{group}.{key}={_value(val)}")
        extra += [f"{key}={_value(cfg[key])}" for key in TOP_LEVEL
                  if key in cfg and composed.get(key) != cfg[key]]  # fmt: skip
        got = identify([*base, *extra, *(paths or [])]).run_id
        check = (
            "composed here it gives the record's run id"
            if got == rec.get("run_id")
            else f"composed here it gives run id {got}, not the record's {rec.get('run_id')} "
            "(the configs, the data or the weights changed since)"
        )
    except Exception as exc:  # an option that no longer exists, data not here, ...
        check = f"not checked here ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})"
    return " ".join(["rpb", *base, *extra]), check


# ---------------------------------------------------------------------------------------------
# The model


def load_dense(rec: dict[str, Any], cache_dir: Path, rebuild: str):
    """``(model, tokenizer)`` of the record's dense model: its cache entry, or the fine-tuned
    checkpoint the record was given (``model.finetuned``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    info = rec.get("dense_info") or {}
    model_cfg = (rec.get("cfg") or {}).get("model") or {}
    if str(info.get("checkpoint", "")).startswith("given:") and model_cfg.get("finetuned"):
        from benchmark.models.loading import load_classifier

        num_labels = int(((rec.get("cfg") or {}).get("dataset") or {}).get("num_labels", 2))
        return load_classifier(model_cfg["finetuned"], num_labels, model_cfg.get("revision"),
                               "model.finetuned")  # fmt: skip
    folder = Path(cache_dir) / "dense" / str(info.get("key"))
    if not info.get("key") or not (folder / "info.json").is_file():
        raise UserError(f"the dense model of {rec['run_id']} is not in the cache ({folder}); "
                        f"rebuild it with: {rebuild}")  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    return model, AutoTokenizer.from_pretrained(folder)


def structured_info(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The head and neuron removal of a structured record (None for a masked one)."""
    method = (rec.get("prune_info") or {}).get("method") or {}
    if method.get("params_removed") and method.get("heads_removed") is not None:
        return method
    return None


def load_pruned(model, rec: dict[str, Any], cache_dir: Path, rebuild: str):
    """The dense ``model`` with the record's pruned weights (masked-dense for a structured
    record); returns the model."""
    import torch

    key = (rec.get("prune_info") or {}).get("key")
    weights = Path(cache_dir) / "pruned" / str(key) / "weights.pt"
    if not key or not weights.is_file():
        raise UserError(f"the pruned weights of {rec['run_id']} are not in the cache "
                        f"({weights.parent}); rebuild them with: {rebuild}")  # fmt: skip
    state = torch.load(weights, map_location="cpu")
    removal = structured_info(rec)
    if removal is None:
        model.load_state_dict(state)
        return model
    return masked_dense_from_structured(model, state, removal)


def masked_dense_from_structured(model, state: dict, removal: dict[str, Any]):
    """Load the state of a structurally pruned model (heads and FFN neurons removed, as
    ``benchmark.pruners.structured`` leaves it) into the dense ``model`` of the same family,
    with zeros in the rows and columns of what was removed. Returns the model."""
    import torch

    from benchmark.models.structure import encoder_blocks

    dense = model.state_dict()
    out = {}
    blocks = {b.name: b for b in encoder_blocks(model)}
    heads_removed = removal["heads_removed"]
    neurons_kept = removal["neurons_kept_index"]
    for i, (prefix, blk) in enumerate(blocks.items()):
        attn = blk.module.attention.self
        n_heads, dh = attn.num_attention_heads, attn.attention_head_size
        kept_heads = [h for h in range(n_heads) if h not in set(heads_removed[i])]
        head_dims = torch.tensor([h * dh + j for h in kept_heads for j in range(dh)],
                                 dtype=torch.long)  # fmt: skip
        neurons = torch.tensor(neurons_kept[i], dtype=torch.long)
        rows = {f"{prefix}.attention.self.{p}": head_dims for p in ("query", "key", "value")}
        rows[f"{prefix}.intermediate.dense"] = neurons
        cols = {f"{prefix}.attention.output.dense": head_dims, f"{prefix}.output.dense": neurons}
        for name, index in rows.items():
            for kind in ("weight", "bias"):
                full = torch.zeros_like(dense[f"{name}.{kind}"])
                full[index] = state[f"{name}.{kind}"].to(full.dtype)
                out[f"{name}.{kind}"] = full
        for name, index in cols.items():
            full = torch.zeros_like(dense[f"{name}.weight"])
            full[:, index] = state[f"{name}.weight"].to(full.dtype)
            out[f"{name}.weight"] = full
            out[f"{name}.bias"] = state[f"{name}.bias"]
    for name, tensor in state.items():
        out.setdefault(name, tensor)
    missing = sorted(set(dense) - set(out))
    unexpected = sorted(set(out) - set(dense))
    if missing or unexpected:
        raise ValueError(f"structured weights do not map onto the dense model: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")  # fmt: skip
    model.load_state_dict(out)
    model.config.pruned_heads = {}
    return model


def layer_sparsity(model, scope: str = "encoder_linear") -> list[tuple[str, int, float]]:
    """``(name, weights, fraction zero)`` of every prunable linear."""
    from benchmark.models.structure import prunable_linears

    out = []
    for name, lin in prunable_linears(model, scope).items():
        w = lin.weight.detach()
        out.append((name, int(w.numel()), float((w == 0).sum()) / max(1, w.numel())))
    return out


# ---------------------------------------------------------------------------------------------
# The card


def _pct(rec: dict[str, Any], metric: str) -> str:
    v = rec.get(metric)
    if v is None:
        return "-"
    lo, hi = rec.get(f"{metric}_ci_low"), rec.get(f"{metric}_ci_high")
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{100 * v:.1f}{ci}"


def model_card(
    rec: dict[str, Any], command: str, layers: list[tuple[str, int, float]], check: str = ""
) -> str:
    """The ``README.md`` of an exported model (YAML front matter for the Hub, then Markdown)."""
    from benchmark.attacks.recipes import threat_model_caption

    cfg = rec.get("cfg") or {}
    pretrained = (cfg.get("model") or {}).get("pretrained")
    structured = structured_info(rec)
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:",
             "  - pruned", "  - robust-prune-bench", f"  - {rec.get('pruner')}"]  # fmt: skip
    if pretrained and "/" in str(pretrained) and not str(pretrained).startswith(("pkg:", "/")):
        front.append(f"base_model: {pretrained}")
    front.append("---")
    tm = rec.get("threat_model")
    numbers = [
        ("clean accuracy (whole evaluation split)", _pct(rec, "clean_acc"),
         f"{rec.get('n_eval')} examples of `{rec.get('split')}`"),
        ("accuracy on the attacked sample", _pct(rec, "attack_clean_acc"),
         f"{rec.get('n_total')} examples attacked"),
        ("accuracy under attack (Aua)", _pct(rec, "aua"), f"{rec.get('n_failed')} survived"),
        ("attack success rate (Suc)", _pct(rec, "asr"), f"{rec.get('n_success')} broken"),
        ("queries per attacked example", _fmt(rec.get("avg_queries"), "{:.1f}"), ""),
        ("dense model's clean accuracy", _fmt(rec.get("dense_acc"), "{:.1%}"), ""),
        ("sparsity reached", _fmt(rec.get("sparsity_actual"), "{:.2%}"),
         f"target {rec.get('sparsity_target')}"),
        ("pruning time (s)", _fmt(rec.get("prune_seconds"), "{:.1f}"), str(rec.get("device"))),
    ]  # fmt: skip
    storage = (
        "The weights are stored **masked-dense**: the full architecture, with zeros where "
        "weights were removed. A dense kernel runs them at dense speed and size; the zeros "
        "give no speed-up or smaller file by themselves."
    )
    if structured:
        storage += (
            " This record's pruning was **structured** (attention heads and FFN neurons "
            "removed, the result physically smaller); a `BertConfig` cannot hold per-layer "
            "widths, so it is exported masked-dense as well: the removed heads' query, key and "
            "value rows and output columns and the removed neurons' rows and columns are zero, "
            "which computes what the smaller model computed. Heads kept per layer: "
            f"{structured.get('heads_kept')}; FFN neurons kept per layer: "
            f"{structured.get('neurons_kept')}."
        )
    dense = rec.get("dense_info") or {}
    prov = [
        ("run id", rec.get("run_id")), ("experiment", rec.get("exp_name")),
        ("seed", rec.get("seed")), ("started", rec.get("started_at")),
        ("git commit", f"{rec.get('git_sha')}{' (dirty)' if rec.get('git_dirty') else ''}"),
        ("schema / pruner / attack version", f"{rec.get('schema_version')} / "
         f"{rec.get('pruner_version')} / {rec.get('attack_version')}"),
        ("library versions", ", ".join(f"{k} {v}" for k, v in (rec.get("versions") or {}).items())),
        ("device", rec.get("device")),
        ("pre-trained weights", json.dumps((rec.get("sources") or {}).get("model"))),
        ("data", json.dumps((rec.get("sources") or {}).get("data"))),
        ("dense model", f"{dense.get('key') or dense.get('checkpoint')}"),
        ("pruned weights", f"`.cache/pruned/{(rec.get('prune_info') or {}).get('key')}`"),
    ]  # fmt: skip
    lines = [
        *front, "",
        f"# {rec.get('model')} on {rec.get('dataset')}, pruned by {rec.get('pruner')} to "
        f"{rec.get('sparsity_target')}", "",
        "Exported by `rpb export` from one record of robust-prune-bench (`rpb_record.json` "
        "in this folder is the record itself). The model was pruned without further "
        "fine-tuning; every number below is the record's, measured on this model, with its "
        "95% Wilson interval.", "",
        "| measure | value [95% interval] | |", "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in numbers], "",
        "## Threat model", "",
        threat_model_caption(tm) if tm else "No attack ran for this record.", "",
        "## Storage", "", storage, "",
        "## Sparsity per layer", "",
        "Fraction of zero weights of every prunable linear (the encoder's attention and FFN "
        "linears; embeddings and the classifier are never pruned).", "",
        "| layer | weights | zero |", "|---|---:|---:|",
        *[f"| `{n}` | {k:,} | {z:.2%} |" for n, k, z in layers], "",
        "## How it was made", "",
        "```bash", command, "```", "",
        "Reconstructed from the record's configuration: the options and every value the "
        f"command must set to give the same job; {check or 'not checked'}.", "",
        "## Provenance", "",
        "| | |", "|---|---|", *[f"| {a} | {b} |" for a, b in prov], "",
        "## Use", "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "model = AutoModelForSequenceClassification.from_pretrained(PATH)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)", "```", "",
    ]  # fmt: skip
    return "\n".join(str(x) for x in lines)


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


# ---------------------------------------------------------------------------------------------
# Entry point


def export(run_id: str, out: Path, overrides: list[str] | None = None) -> Path:
    """Write the Hugging Face folder of ``run_id`` into ``out``; return ``out``."""
    paths = resolve_paths(list(overrides or []))
    _, rec = find_record(Path(paths["results_dir"]), run_id)
    command, check = command_of(rec, list(overrides or []))
    rebuild = f"{command} attack=none force=true"
    model, tok = load_dense(rec, Path(paths["cache_dir"]), rebuild)
    model = load_pruned(model, rec, Path(paths["cache_dir"]), rebuild)
    model.eval()
    layers = layer_sparsity(model, rec.get("scope") or "encoder_linear")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / CARD_NAME).write_text(model_card(rec, command, layers, check), encoding="utf-8")
    (out / RECORD_NAME).write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
    zero = sum(k * z for _, k, z in layers) / max(1, sum(k for _, k, _ in layers))
    log.info("exported %s (%s, %s at %s; %.2f%% of the prunable weights zero) -> %s",
             run_id, rec.get("model"), rec.get("pruner"), rec.get("sparsity_target"),
             100 * zero, out)  # fmt: skip
    return out


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload ``folder`` to the Hub model repository ``repo`` (created when missing); return
    the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id=repo, repo_type="model", exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                             commit_message=f"rpb export {folder.name}")  # fmt: skip
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``rpb export`` and ``python -m benchmark.export``)."""
    ap = argparse.ArgumentParser(
        prog="rpb export",
        description="Write a record's pruned model as a Hugging Face folder (docs/export.md).",
    )
    ap.add_argument("run_id", help="the record's run id (results/runs/<exp>/<run_id>.json)")
    ap.add_argument("overrides", nargs="*", metavar="paths.KEY=VALUE",
                    help="where records and caches are, as for a run")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True, help="the folder to write")
    ap.add_argument("--push-to-hub", metavar="REPO", default=None,
                    help="also upload the folder to this Hub model repository")  # fmt: skip
    args = ap.parse_intermixed_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = export(args.run_id, args.out, args.overrides)
    except UserError as exc:
        log.error("error: %s", exc)
        return 2
    if args.push_to_hub:
        try:
            url = push_to_hub(folder, args.push_to_hub)
        except Exception as exc:  # offline, no token, no permission: the folder stays
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            log.error("error: could not upload to the Hub repository %s (%s: %s); the folder "
                      "is at %s", args.push_to_hub, type(exc).__name__, first, folder)  # fmt: skip
            return 1
        log.info("uploaded to %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
