"""Record schema 3: what is identity, what is recorded, compressed logs, and the migration.

Identity is computed in-process from the composed config (as ``python -m benchmark.run`` does
before any work); the Hub stand-in is a hand-made cache in the ``huggingface_hub`` layout
(``models--ORG--NAME/refs/main`` holding a commit), read offline.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from benchmark.data.loading import stratified_indices
from benchmark.records import logs
from benchmark.records.store import run_id_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from test_contract_cli import identity_of  # noqa: E402  (the same in-process identity)

BASE = ["experiment=smoke", "paths.results_dir=/tmp/unused-results", "exp_name=s3"]


def test_cache_pruned_is_not_identity():
    assert identity_of(BASE).run_id == identity_of([*BASE, "cache_pruned=false"]).run_id


@pytest.mark.parametrize(
    "extra",
    [["precision=bfloat16"], ["eval_sample=16"], ["eval_sample=16", "eval_sample_seed=1"],
     ["pruner=wanda", "pruner.calibration=sst2"], ["attack.max_seconds_per_example=5"]],
)  # fmt: skip
def test_what_changes_results_changes_the_run_id(extra):
    plain = [*BASE, *[e for e in extra if e.startswith("pruner=")]]
    assert identity_of(plain).run_id != identity_of([*BASE, *extra]).run_id


def test_calibration_source_is_identity_and_naming_the_task_is_the_task():
    other = identity_of([*BASE, "pruner=wanda", "pruner.calibration=sst2"])
    assert other.identity["calibration_source"]["kind"] in ("local", "hub")
    sst2 = [*BASE, "dataset=sst2", "pruner=wanda"]
    assert identity_of([*sst2, "pruner.calibration=sst2"]).run_id == identity_of(sst2).run_id


def test_calibration_value_is_checked():
    from benchmark.errors import UserError

    with pytest.raises(UserError, match=r"pruner\.calibration='imdb2'"):
        identity_of([*BASE, "pruner=wanda", "pruner.calibration=imdb2"])


def test_threat_model_hash_follows_declared_settings_and_textattack(monkeypatch):
    from benchmark.attacks import recipes

    tf = [*BASE, "attack=textfooler_offline"]
    base = identity_of(tf)
    fewer = identity_of([*tf, "attack.options.max_candidates=4"])
    assert base.identity["threat_model"] != fewer.identity["threat_model"]
    monkeypatch.setattr(recipes, "textattack_version", lambda: "0.3.99")
    newer = identity_of(tf)
    assert newer.identity["threat_model"] != base.identity["threat_model"]
    assert newer.run_id != base.run_id


def test_every_attack_option_declares_its_threat_model():
    from omegaconf import OmegaConf

    from benchmark.attacks.recipes import threat_model

    for path in sorted((ROOT / "conf" / "attack").glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        cfg["seed"] = 0
        block = threat_model(cfg)
        if cfg["recipe"] == "none":
            assert block is None
            continue
        assert block["textattack"] and len(block["hash"]) == 10, path.name
        if cfg["recipe"] != "transfer":  # a hang guard is finite for every real attack
            assert cfg["max_seconds_per_example"] and cfg["max_seconds_per_example"] > 0


def test_transfer_is_keyed_on_source_run_id_and_log_content(tmp_path):
    rows = [{"example_index": 0, "result": "successful", "perturbed": "x", "label": 1}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    a = tmp_path / "a" / "abc123.attack.jsonl"
    b = tmp_path / "b" / "abc123.attack.jsonl.gz"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text(text)
    b.write_bytes(gzip.compress(text.encode()))
    tr = [*BASE, "attack=transfer"]
    ia = identity_of([*tr, f"attack.options.source={a}"])
    ib = identity_of([*tr, f"attack.options.source={b}"])
    assert ia.run_id == ib.run_id  # same source job and content, another folder and form
    assert ia.identity["transfer_source"] == {"run_id": "abc123",
                                              "log_sha256": logs.content_sha256(a)}  # fmt: skip
    a.write_text(text.replace('"x"', '"y"'))
    assert identity_of([*tr, f"attack.options.source={a}"]).run_id != ia.run_id


def _fake_hub_model(hub: Path, repo: str, commit: str) -> None:
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)


def test_hub_model_identity_is_the_commit_the_cache_resolves(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    args = [*BASE, "model=bert_base_uncased"]
    unresolved = identity_of(args).identity["sources"]["pretrained"]
    assert unresolved == {"kind": "hub", "id": "bert-base-uncased", "revision": None,
                          "commit": None}  # fmt: skip
    _fake_hub_model(tmp_path / "hub", "bert-base-uncased", "a" * 40)
    first = identity_of(args)
    assert first.identity["sources"]["pretrained"]["commit"] == "a" * 40
    (tmp_path / "hub" / "models--bert-base-uncased" / "refs" / "main").write_text("b" * 40)
    assert identity_of(args).run_id != first.run_id  # the Hub moved: another job


def test_local_model_folder_is_identified_by_content(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w1")
    args = [*BASE, f"model.pretrained={folder}"]
    first = identity_of(args)
    sources = first.identity["sources"]["pretrained"]
    assert sources["kind"] == "local" and sources["id"] == str(folder) and sources["sha256"]
    (folder / "model.safetensors").write_bytes(b"w2")  # new weights under the same name
    assert identity_of(args).run_id != first.run_id


def test_bookkeeping_edits_do_not_rekey_caches(tmp_path, monkeypatch):
    from benchmark.records import identity

    pkg = tmp_path / "benchmark"
    for sub in ("training", "records"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "training" / "dense.py").write_text(
        "from benchmark.records.store import f\nfrom benchmark.training.loop import g\n"
    )
    (pkg / "training" / "loop.py").write_text("def g():\n    return 1\n")
    (pkg / "records" / "store.py").write_text("def f():\n    return 1\n")
    monkeypatch.setattr(identity, "PACKAGE_ROOT", pkg)
    before = identity.source_hash("benchmark.training.dense")
    (pkg / "records" / "store.py").write_text("def f():\n    return 2\n")
    assert identity.source_hash("benchmark.training.dense") == before
    (pkg / "training" / "loop.py").write_text("def g():\n    return 2\n")
    assert identity.source_hash("benchmark.training.dense") != before


def test_dense_key_holds_the_number_of_classes():
    from benchmark.data.loading import DatasetSpec
    from benchmark.models.loading import ModelSpec
    from benchmark.training.dense import FineTune, dense_key

    model = ModelSpec(name="tiny_bert", pretrained="tiny")
    two, three = (DatasetSpec(name="tiny", num_labels=n, builtin="tiny") for n in (2, 3))
    assert dense_key(model, two, FineTune()) != dense_key(model, three, FineTune())


def test_stratified_sample_of_a_label_sorted_split():
    labels = [1] * 30 + [0] * 10  # sorted by label, as the IMDB mirror
    idx = stratified_indices(labels, 8, seed=0)
    assert idx == sorted(idx) and len(set(idx)) == 8
    assert sum(labels[i] for i in idx) == 6  # 3:1, exactly the split's share
    assert idx == stratified_indices(labels, 8, seed=0)
    assert idx != stratified_indices(labels, 8, seed=1)
    assert stratified_indices(labels, 40, seed=0) == list(range(40))
    odd = [0, 0, 1, 1, 2]  # shares 1.2, 1.2, 0.6: the largest remainder takes the last one
    assert sorted(odd[i] for i in stratified_indices(odd, 3, seed=0)) == [0, 1, 2]


def test_compressed_logs_are_deterministic_and_read_in_both_forms(tmp_path):
    rows = [{"example_index": i, "result": "failed"} for i in range(3)]
    partial = tmp_path / "r.attack.partial.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut')
    final = logs.finish_log(partial, tmp_path, "r")
    assert final.name == "r.attack.jsonl.gz" and not partial.exists()
    assert logs.read_rows(final) == rows  # the line cut by a kill is dropped
    first = final.read_bytes()
    partial.write_text(logs.read_text(final))
    assert logs.finish_log(partial, tmp_path, "r").read_bytes() == first  # same bytes
    plain = tmp_path / "r.attack.jsonl"
    assert logs.resolve(plain) == final  # an old name resolves to the compressed log
    plain.write_text(logs.read_text(final))
    assert logs.content_sha256(plain) == logs.content_sha256(final)
    assert logs.find_log(tmp_path, "r") == final


def test_logs_split_rows_at_newlines_only(tmp_path):
    """A review holding U+0085 or U+2028 unescaped (json.dumps keeps them with
    ensure_ascii=False; IMDB has U+0085) stays one row for both readers, compressed or not."""
    from benchmark.reporting.records import read_attack_log

    rows = [{"example_index": i, "result": "failed", "original": f"a\x85b\u2028c\x0cd {i}"}
            for i in range(3)]  # fmt: skip
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    plain = tmp_path / "r.attack.jsonl"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "p.attack.jsonl.gz"
    logs.write_compressed(plain, packed)
    for path in (plain, packed):
        assert logs.read_rows(path) == rows
        assert read_attack_log(path) == rows
    cut = tmp_path / "cut.attack.jsonl"
    cut.write_text(text + json.dumps(rows[0], ensure_ascii=False)[:20], encoding="utf-8")
    assert logs.read_rows(cut) == rows  # a line cut off by a kill is left out


def test_migration_rekeys_an_old_record_to_the_id_of_the_same_job(tmp_path):
    """A schema-2 record of the smoke job (its config as that code wrote it, a plain log whose
    slowest example is far below the new time limit) migrates to the run id the current code
    computes for the same command, with its log compressed."""
    import migrate_records

    new = identity_of(BASE)
    old_cfg = json.loads(json.dumps(new.identity))
    for key in ("precision", "eval_sample", "eval_sample_seed", "sources", "threat_model"):
        old_cfg.pop(key)
    old_cfg["pruner"].pop("calibration", None)
    old_cfg["attack"]["bf16"] = False
    old_cfg["attack"]["max_seconds_per_example"] = None
    old_id = run_id_of(old_cfg)
    assert old_id != new.run_id
    runs = tmp_path / "runs" / "s3"
    runs.mkdir(parents=True)
    rec = {"run_id": old_id, "status": "ok", "cfg": old_cfg, "versions": {"textattack": "0.3.11"},
           "attack": "deepwordbug"}  # fmt: skip
    (runs / f"{old_id}.json").write_text(json.dumps(rec))
    rows = [{"example_index": 0, "result": "failed", "seconds": 0.5}]
    (runs / f"{old_id}.attack.jsonl").write_text(json.dumps(rows[0]) + "\n")
    moved = migrate_records.migrate(tmp_path)
    assert [m[1] for m in moved] == [new.run_id]
    out = json.loads((runs / f"{new.run_id}.json").read_text())
    assert out["migrated_from"] == [old_id] and out["precision"] == "float32"
    assert out["threat_model"]["hash"] == new.identity["threat_model"]
    assert logs.read_rows(runs / f"{new.run_id}.attack.jsonl.gz") == rows
    assert not (runs / f"{old_id}.attack.jsonl").exists()
    assert migrate_records.migrate(tmp_path) == []  # safe to run twice


def test_rticket_v2_records_with_a_capped_ticket_migrate_to_version_3(tmp_path):
    """RobustT version 3 trains the ticket 10 epochs instead of 3; under ``budget=reduced`` the
    200-step cap makes both one computation, so such a version-2 record moves to the id the
    current code computes for the same job. An uncapped version-2 record (another ticket) is
    left stale."""
    import migrate_records

    new = identity_of([*BASE, "pruner=rticket", "budget=reduced"])
    assert new.identity["pruner"]["version"] == 3 and new.identity["pruner"]["ticket_max_steps"]
    old_cfg = json.loads(json.dumps(new.identity))
    old_cfg["pruner"].update(version=2, ticket_epochs=3)
    old_cfg["pruner"].pop("imp_lr_schedule")
    uncapped = json.loads(json.dumps(old_cfg))
    uncapped["pruner"]["ticket_max_steps"] = None
    runs = tmp_path / "runs" / "s3"
    runs.mkdir(parents=True)
    for cfg in (old_cfg, uncapped):
        rid = run_id_of(cfg)
        rec = {"run_id": rid, "status": "ok", "cfg": cfg, "pruner_version": 2,
               "versions": {"textattack": "0.3.11"}, "attack": "deepwordbug"}  # fmt: skip
        (runs / f"{rid}.json").write_text(json.dumps(rec))
    migrate_records.migrate(tmp_path)
    assert sorted(p.stem for p in runs.glob("*.json")) == sorted([new.run_id, run_id_of(uncapped)])
    out = json.loads((runs / f"{new.run_id}.json").read_text())
    assert out["pruner_version"] == 3 and out["migrated_from"] == [run_id_of(old_cfg)]
    kept = json.loads((runs / f"{run_id_of(uncapped)}.json").read_text())
    assert kept["cfg"]["pruner"]["version"] == 2 and kept["pruner_version"] == 2
    assert migrate_records.migrate(tmp_path) == []


def test_migration_keeps_no_limit_where_the_log_cannot_prove_it(tmp_path):
    import migrate_records

    cfg = {"attack": {"recipe": "deepwordbug", "max_seconds_per_example": None}, "model": {}}
    rec = {"run_id": "x", "versions": {}}
    slow = tmp_path / "x.attack.jsonl"
    slow.write_text(json.dumps({"seconds": 50.0}) + "\n")  # beyond the new 43 s guard
    out = migrate_records.schema3(cfg, rec, slow, {}, tmp_path)
    assert out["attack"]["max_seconds_per_example"] is None
    assert (
        migrate_records.schema3(cfg, rec, None, {}, tmp_path)["attack"]["max_seconds_per_example"]
        is None
    )  # no log: nothing proves it
    slow.write_text(json.dumps({"seconds": 1.0}) + "\n")
    assert (
        migrate_records.schema3(cfg, rec, slow, {}, tmp_path)["attack"]["max_seconds_per_example"]
        == 43
    )


def test_cross_split_duplicates_verbatim_and_title_plus_description():
    from benchmark.data.loading import sample_indices
    from benchmark.jobs.pipeline import attack_positions, cross_split_duplicates

    desc = "the central bank raised its key rate by half a point on tuesday"
    train = [(desc, 2), ("a fine and moving film", 1), ("slow .", 0)]
    evals = [
        ("Rates Up " + desc, 2),  # title + a training description: a duplicate
        ("a fine and moving film", 1),  # verbatim
        ("it 's slow -- very , very slow .", 0),  # ends with a 2-word training phrase: not one
        ("an unseen text of its own", 1),
    ]
    assert cross_split_duplicates(evals, train) == [0, 1]
    assert attack_positions(4, 0, 0, [0, 1]) == [2, 3]
    assert attack_positions(10, 4, 3, []) == sample_indices(10, 4, 3)  # the old sample
    assert not {0, 1} & set(attack_positions(10, 5, 3, [0, 1]))


def test_stale_pruned_cache_temp_folders_are_cleaned(tmp_path):
    import os
    import subprocess

    from benchmark.jobs.pipeline import clean_stale_temp

    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs
    stale = tmp_path / f".abc.tmp{dead.pid}-123"
    live = tmp_path / f".abc.tmp{os.getpid()}-456"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "weights.pt").write_bytes(b"partial")
    assert clean_stale_temp(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_dense_info_counts_the_examples_the_fine_tune_trained_on(tmp_path):
    """``dense_info.n_train`` is the recipe's capped subsample (IMDB: 12,500 of 25,000), not the
    split; records written before the fix are corrected by the migration, once."""
    import migrate_records

    from benchmark.training.loop import capped_examples

    assert capped_examples(25000, 12500) == 12500
    assert capped_examples(10001, 12500) == 10001
    assert capped_examples(67349, None) == 67349
    runs = tmp_path / "runs" / "d"
    runs.mkdir(parents=True)
    cfg = identity_of(BASE).identity
    rid = run_id_of(cfg)
    dense = {"n_train": 25000, "n_train_split": 25000, "recipe": {"max_train_examples": 12500}}
    rec = {"run_id": rid, "status": "ok", "cfg": cfg, "versions": {"textattack": "0.3.11"},
           "dense_info": dense}  # fmt: skip
    (runs / f"{rid}.json").write_text(json.dumps(rec))
    migrate_records.migrate(tmp_path)
    out = json.loads((runs / f"{rid}.json").read_text())
    assert out["run_id"] == rid and "migrated_from" not in out  # content only, same identity
    assert out["dense_info"]["n_train"] == 12500 and out["dense_info"]["n_train_split"] == 25000
    assert migrate_records.migrate(tmp_path) == []
