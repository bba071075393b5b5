"""scripts/check_dense_reproduced.py: a re-fine-tuned dense model against a record's attack log."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "check_dense_reproduced", ROOT / "scripts/check_dense_reproduced.py"
)
cdr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cdr)


def _fixture(tmp_path, tiny_model, tiny_examples, flip: int | None):
    """A dense cache entry holding the tiny model and a record whose log holds its predictions
    (the prediction of example ``flip`` inverted, when given)."""
    model, tok = tiny_model
    key = "tiny-tiny-000000000000"
    entry = tmp_path / "cache" / "dense" / key
    model.save_pretrained(entry)
    tok.save_pretrained(entry)
    info = {"dense_acc": 0.5, "train": {"final_loss": 0.25}}
    (entry / "info.json").write_text(json.dumps(info))
    runs = tmp_path / "runs"
    runs.mkdir()
    rows = []
    model.eval()
    with torch.no_grad():
        for i, (text, label) in enumerate(tiny_examples["validation"][:12]):
            p = model(**tok(text, return_tensors="pt")).logits.softmax(-1)[0]
            pred = int(p.argmax())
            if i == flip:
                pred = 1 - pred
            rows.append({"example_index": i, "label": label, "orig_pred": pred,
                         "orig_true_prob": float(p[label]), "original": text})  # fmt: skip
    (runs / "r1.attack.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = {"run_id": "r1", "dense_info": {"key": key, **info}}
    (runs / "r1.json").write_text(json.dumps(record))
    return runs / "r1.json", tmp_path / "cache"


def test_same_model_passes_and_a_changed_prediction_fails(
    tmp_path, tiny_model, tiny_examples, caplog
) -> None:
    caplog.set_level(logging.INFO)
    record, cache = _fixture(tmp_path / "a", tiny_model, tiny_examples, flip=None)
    assert cdr.main(["--record", str(record), "--cache-dir", str(cache)]) == 0
    assert "predictions equal on 12 of 12" in caplog.text
    record, cache = _fixture(tmp_path / "b", tiny_model, tiny_examples, flip=3)
    caplog.clear()
    assert cdr.main(["--record", str(record), "--cache-dir", str(cache)]) == 1
    assert "predictions equal on 11 of 12" in caplog.text
