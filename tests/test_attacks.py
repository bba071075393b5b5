"""Attack configurations: what each name builds, offline runs, resources, workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.attacks.adapter import (
    RECIPES,
    AttackSpec,
    PaddedModelWrapper,
    build_attack,
    run_attack,
)
from benchmark.attacks.external import AttackResources, check_external
from benchmark.attacks.resources import NLTK_RESOURCES, check, parse_intentional
from benchmark.errors import UserError
from benchmark.jobs.registry import options

ROOT = Path(__file__).resolve().parents[1]
NLTK_DIR = ROOT / ".resources" / "nltk_data"
NEIGHBORS = ROOT.parent / "shared" / "resources" / "counterfitted_neighbors.json"
OFFLINE = ["deepwordbug", "pwws", "textfooler_offline", "textbugger_offline"]
N_EXAMPLES = 4


pytestmark = pytest.mark.usefixtures("nltk_ready")


@pytest.fixture(scope="module")
def tiny_wrapper(trained_tiny):
    model, tok = trained_tiny
    return PaddedModelWrapper(model, tok, max_length=32, batch_size=64)


@pytest.fixture(scope="module")
def examples():
    from benchmark.data.tiny import tiny_splits

    return [(t, y) for t, y in tiny_splits()["validation"]][:N_EXAMPLES]


# ----------------------------------------------------------------- names and configs


def test_every_config_has_a_builder():
    from benchmark.attacks.recipes import BUILDERS

    # transfer replays and builds nothing; cascade builds its recipes (tests/test_cascade.py)
    names = set(options("attack")) - {"none", "transfer", "cascade"}
    assert names == set(BUILDERS)
    for name in ["textfooler", "textbugger", "bertattack", "bae", "bertattack_robustt",
                 "textdefender", "textfooler_offline", "textbugger_offline"]:  # fmt: skip
        assert name in names


def test_recipe_table_names_the_right_classes():
    from benchmark.attacks.recipes import BUILDERS

    assert RECIPES["bertattack"].endswith(".BERTAttackLi2020")  # not BAE (robust_ticket)
    assert RECIPES["bae"].endswith(".BAEGarg2019")
    assert RECIPES["textfooler"].endswith(".TextFoolerJin2019")
    assert RECIPES["textbugger"].endswith(".TextBuggerLi2018")
    assert BUILDERS["bertattack_robustt"].base == "BAEGarg2019"
    assert BUILDERS["textdefender"].base == "TextFoolerJin2019"


def test_unknown_recipe_suggests(tiny_wrapper):
    with pytest.raises(ValueError, match="did you mean 'textfooler'"):
        build_attack(AttackSpec(recipe="textfoolr"), tiny_wrapper)


# ----------------------------------------------------------------- construction (no download)


@pytest.fixture(scope="module")
def fake_resources(tmp_path_factory, trained_tiny, res):
    """A tiny paragramcf folder and a tiny masked LM, so stock recipes build offline."""
    from transformers import BertConfig, BertForMaskedLM

    from benchmark.data.tiny import VOCAB

    root = tmp_path_factory.mktemp("fake_res")
    emb = root / "paragramcf"
    emb.mkdir()
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(VOCAB), 8)).astype(np.float32)
    np.save(emb / "paragram.npy", matrix)
    with open(emb / "wordlist.pickle", "wb") as fh:
        pickle.dump({w: i for i, w in enumerate(VOCAB)}, fh)
    order = np.argsort(-(matrix @ matrix.T), axis=1)[:, :6]
    np.save(emb / "nn.npy", order)
    for name in ("mse_dist.p", "cos_sim.p"):
        with open(emb / name, "wb") as fh:
            pickle.dump({}, fh)
    _, tok = trained_tiny
    mlm_dir = root / "mlm"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertForMaskedLM(cfg).save_pretrained(mlm_dir)
    tok.save_pretrained(mlm_dir)
    yield AttackResources(
        nltk_data=res.nltk_data, counterfitted_neighbors=res.counterfitted_neighbors,
        counterfitted_embeddings=str(emb), masked_lm=str(mlm_dir), use_model=str(root / "use"),
    )  # fmt: skip
    from textattack.shared import utils

    utils.GLOBAL_OBJECTS.pop("textattack_counterfitted_GLOVE_embedding", None)


def _build(name, wrapper, resources, monkeypatch=None, **opts):
    from benchmark.attacks.external import homoglyph_file

    if name == "textbugger" and not homoglyph_file().is_file():
        # The stock class opens a file the 0.3.11 wheel lacks; build with the subclass that
        # skips it (same word-swap behaviour), only to inspect the recipe's structure.
        import textattack.attack_recipes.textbugger_li_2018 as mod

        from benchmark.attacks.components import HomoglyphSwapBuiltin

        monkeypatch.setattr(mod, "WordSwapHomoglyphSwap", HomoglyphSwapBuiltin)
    return build_attack(AttackSpec(recipe=name, options=opts), wrapper, resources)


def _constraint(attack, cls):
    found = [c for c in attack.constraints if isinstance(c, cls)]
    assert len(found) == 1, f"{cls.__name__}: {found}"
    return found[0]


def _has(attack, cls) -> bool:
    return any(isinstance(c, cls) for c in attack.constraints)


def test_stock_recipes_build_as_shipped(tiny_wrapper, fake_resources, monkeypatch):
    from textattack.constraints.grammaticality import PartOfSpeech
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder as USE
    from textattack.transformations import (
        CompositeTransformation,
        WordSwapEmbedding,
        WordSwapHomoglyphSwap,
        WordSwapMaskedLM,
    )

    a = _build("textfooler", tiny_wrapper, fake_resources)
    assert type(a.transformation) is WordSwapEmbedding and a.transformation.max_candidates == 50
    assert _constraint(a, WordEmbeddingDistance).min_cos_sim == 0.5 and _has(a, PartOfSpeech)
    use = _constraint(a, USE)
    assert (use.threshold, use.metric, use.window_size) == (0.840845057, "angular", 15)
    assert use._tfhub_url == fake_resources.use_model  # paths.use_model, no TF-Hub

    a = _build("textbugger", tiny_wrapper, fake_resources, monkeypatch)
    assert isinstance(a.transformation, CompositeTransformation)
    kinds = {type(t).__mro__[0]: t for t in a.transformation.transformations}
    assert any(isinstance(t, WordSwapHomoglyphSwap) for t in kinds.values())
    assert [t.max_candidates for t in kinds.values() if type(t) is WordSwapEmbedding] == [5]
    assert _constraint(a, USE).threshold == 0.8

    a = _build("bertattack", tiny_wrapper, fake_resources)
    t = a.transformation
    assert isinstance(t, WordSwapMaskedLM) and (t.method, t.max_candidates) == ("bert-attack", 8)
    assert _constraint(a, MaxWordsPerturbed).max_percent == 0.4
    assert (_constraint(a, USE).threshold, _constraint(a, USE).metric) == (0.2, "cosine")
    assert a.search_method.wir_method == "unk"

    a = _build("bae", tiny_wrapper, fake_resources)
    t = a.transformation
    assert isinstance(t, WordSwapMaskedLM) and (t.method, t.max_candidates) == ("bae", 50)
    assert _constraint(a, USE).threshold == 0.936338023 and _has(a, PartOfSpeech)


def test_modified_recipes(tiny_wrapper, fake_resources):
    from textattack.constraints.grammaticality import PartOfSpeech
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder as USE
    from textattack.transformations import WordSwapEmbedding

    a = _build("bertattack_robustt", tiny_wrapper, fake_resources)
    assert type(a.transformation) is WordSwapEmbedding and a.transformation.max_candidates == 50
    use = _constraint(a, USE)
    assert (use.threshold, use.metric, use.window_size) == (0.2, "cosine", 15)
    assert use.compare_against_original and not use.skip_text_shorter_than_window
    assert _has(a, PartOfSpeech) and a.search_method.wir_method == "delete"

    a = _build("textdefender", tiny_wrapper, fake_resources)
    assert type(a.transformation) is WordSwapEmbedding and a.transformation.max_candidates == 50
    assert _constraint(a, MaxWordsPerturbed).max_percent == 0.3
    assert (_constraint(a, USE).threshold, _constraint(a, USE).metric) == (0.84, "cosine")
    assert not _has(a, WordEmbeddingDistance)


def test_offline_variants_structure(tiny_wrapper, res, fake_resources):
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.constraints.semantics.sentence_encoders import SBERT
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder as USE
    from textattack.transformations import WordSwapEmbedding

    from benchmark.attacks.components import LocalSentenceEncoder, WordSwapNeighborTable

    a = _build("textfooler_offline", tiny_wrapper, res, candidates="auto")
    assert a.build_info["candidates"] == "table"  # no local vectors in `res`
    t = a.transformation
    assert isinstance(t, WordSwapNeighborTable) and t.max_candidates == 8
    enc = _constraint(a, LocalSentenceEncoder)
    assert isinstance(enc, SBERT) and not _has(a, USE) and not _has(a, WordEmbeddingDistance)
    # USE's settings kept (the stated rule): angular, 0.840845057, window 15, vs previous text
    assert (enc.metric, enc.threshold, enc.window_size) == ("angular", 0.840845057, 15)
    assert not enc.compare_against_original

    a = _build("textfooler_offline", tiny_wrapper, fake_resources, candidates="auto")
    assert a.build_info["candidates"] == "embedding"  # local vectors present: TextFooler's
    assert type(a.transformation) is WordSwapEmbedding and a.transformation.max_candidates == 50
    assert _constraint(a, WordEmbeddingDistance).min_cos_sim == 0.5

    a = _build("textbugger_offline", tiny_wrapper, res, sub_w="none")
    assert len(a.transformation.transformations) == 4
    assert _constraint(a, LocalSentenceEncoder).threshold == 0.8


def test_neighbor_table_swaps_keep_case():
    from benchmark.attacks.components import WordSwapNeighborTable

    t = WordSwapNeighborTable({"movie": ["film", "films", "movie", "a_b"]}, max_candidates=2)
    assert t._get_replacement_words("Movie") == ["Film", "Films"]
    assert t._get_replacement_words("zzz") == []


# ----------------------------------------------------------------- offline runs


@pytest.fixture(scope="module")
def offline_runs(tiny_wrapper, res, examples):
    """Each offline attack built once and run twice serially (same seed)."""
    out = {}
    for name in OFFLINE:
        spec = AttackSpec(recipe=name)
        spec.check_resources(res)
        attack = build_attack(spec, tiny_wrapper, res)
        first, _ = run_attack(attack, examples, seed=3, progress=False)
        second, _ = run_attack(attack, examples, seed=3, progress=False)
        out[name] = (attack, first, second)
    return out


def _numbers(summary) -> dict:
    d = summary.metrics()
    d.pop("seconds")
    return d


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_attack_counts(name, offline_runs):
    _, s, _ = offline_runs[name]
    assert s.n_success + s.n_failed + s.n_skipped == s.n_total == N_EXAMPLES
    assert s.aua <= s.attack_clean_acc
    assert s.attack_clean_acc == 1.0  # the tiny model is 100% accurate on its task
    if s.n_success:
        assert 0 < s.avg_perturbed_frac <= 1


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_attack_same_seed_same_summary(name, offline_runs):
    _, first, second = offline_runs[name]
    assert _numbers(first) == _numbers(second)


@pytest.mark.parametrize("name", ["deepwordbug", "textfooler_offline"])
def test_workers_equal_serial(name, offline_runs, examples, tmp_path):
    attack, serial, _ = offline_runs[name]
    log = tmp_path / "a.jsonl"
    parallel, _ = run_attack(attack, examples, seed=3, log_path=log, progress=False, workers=2)
    assert _numbers(parallel) == _numbers(serial)
    rows = [__import__("json").loads(x) for x in log.read_text().splitlines()]
    assert [r["example_index"] for r in rows] == list(range(N_EXAMPLES))
    assert all((r["perturbed_frac"] is None) == (r["result"] != "successful") for r in rows)


def _strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_log_has_the_protocol_fields(offline_runs, examples, tmp_path):
    attack, _, _ = offline_runs["deepwordbug"]
    idx = [10 + 3 * i for i in range(len(examples))]  # indices into a larger split
    _, rows = run_attack(
        attack, examples, seed=3, log_path=tmp_path / "l.jsonl", progress=False, indices=idx
    )
    for r in rows:
        assert r["example_index"] in idx and r["label"] in (0, 1)
        assert r["result"] in ("successful", "failed", "skipped")
        assert 0.0 <= r["orig_true_prob"] <= 1.0 and 0.0 <= r["pert_true_prob"] <= 1.0
        if r["result"] == "successful":
            assert r["pert_pred"] != r["label"] and r["char_edit_distance"] > 0
            assert r["pert_true_prob"] < 0.5
        if r["result"] == "failed":
            assert r["pert_pred"] == r["label"] == r["orig_pred"]


def test_killed_attack_resumes_to_the_same_log(offline_runs, examples, tmp_path):
    """An attack interrupted after 3 examples (last line cut mid-write) and relaunched ends
    with the same per-example log as an uninterrupted run."""
    attack, _, _ = offline_runs["deepwordbug"]
    full_log = tmp_path / "full.jsonl"
    _, full = run_attack(attack, examples, seed=3, log_path=full_log, progress=False)
    cut = tmp_path / "cut.jsonl"
    lines = full_log.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:3]) + lines[3][:20])  # killed while writing line 4
    calls = []
    real = attack.attack
    attack.attack = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        summary, resumed = run_attack(attack, examples, seed=3, log_path=cut, progress=False)
    finally:
        attack.attack = real
    assert len(calls) == len(examples) - 3  # the 3 complete rows were not attacked again
    assert _strip_time(resumed) == _strip_time(full)
    assert _strip_time(
        [__import__("json").loads(x) for x in cut.read_text().splitlines()]
    ) == _strip_time(full)
    assert summary.n_total == len(examples)


def test_time_limit_counts_as_limit(offline_runs, examples):
    import time as _time

    attack, _, _ = offline_runs["deepwordbug"]
    real = attack.attack

    def slow(*a, **k):
        _time.sleep(2.0)
        return real(*a, **k)

    attack.attack = slow
    try:
        summary, rows = run_attack(
            attack, examples[:2], seed=3, progress=False, max_seconds_per_example=0.2
        )
    finally:
        attack.attack = real
    assert [r["result"] for r in rows] == ["limit", "limit"]
    assert all(r["limit"] == "seconds" for r in rows)
    assert summary.n_limit == 2 and summary.n_failed == 0 and summary.aua == 0.0
    assert summary.metrics()["aua_upper"] == 1.0


def test_bf16_wrapper_close(trained_tiny):
    model, tok = trained_tiny
    texts = ["the movie was good", "a dull and boring plot"]
    fp32 = PaddedModelWrapper(model, tok, 32)(texts)
    bf16 = PaddedModelWrapper(model, tok, 32, precision="bfloat16")(texts)
    assert np.allclose(fp32, bf16, atol=0.1)
    assert not np.array_equal(fp32, bf16)  # the autocast really ran
    assert (fp32.argmax(1) == bf16.argmax(1)).all()


# ----------------------------------------------------------------- missing resources


def _one_line_error(fn, *needles: str) -> str:
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_resources_one_line(tmp_path, monkeypatch):
    import benchmark.attacks.external as ext

    none = AttackResources(
        nltk_data=str(NLTK_DIR), counterfitted_neighbors=str(tmp_path / "no.json"),
        counterfitted_embeddings=str(tmp_path / "noemb"), use_model=str(tmp_path / "nouse"),
        masked_lm=str(tmp_path / "nomlm"), sentence_encoder=str(tmp_path / "noenc"),
    )  # fmt: skip
    _one_line_error(lambda: check_external(["counterfitted_neighbors"], none, "x"),
                    "paths.counterfitted_neighbors")  # fmt: skip
    _one_line_error(lambda: check_external(["sentence_encoder"], none, "x"),
                    "paths.sentence_encoder")  # fmt: skip
    _one_line_error(lambda: check_external(["counterfitted_embeddings"], none, "x"),
                    "paths.counterfitted_embeddings", "paragramcf")  # fmt: skip
    unset = AttackResources(nltk_data=str(NLTK_DIR))
    monkeypatch.setattr(ext, "textattack_cache_dir", lambda: tmp_path / "ta_cache")
    _one_line_error(lambda: check_external(["counterfitted_embeddings"], unset, "x"),
                    "paths.counterfitted_embeddings", "attack_downloads")  # fmt: skip
    _one_line_error(lambda: check_external(["masked_lm"], none, "x"), "paths.masked_lm")
    _one_line_error(lambda: check_external(["use"], none, "x"), "Universal Sentence Encoder")
    monkeypatch.setattr(ext, "homoglyph_file", lambda: tmp_path / "intentional_homoglyphs.txt")
    _one_line_error(lambda: check_external(["homoglyphs"], none, "x"),
                    "intentional_homoglyphs.txt", "textbugger_offline")  # fmt: skip
    _one_line_error(lambda: check(["omw-1.4"], str(tmp_path), "x"), "paths.nltk_data")
    assert "omw-1.4" in NLTK_RESOURCES


@pytest.mark.parametrize("name", ["textfooler_offline", "textbugger_offline"])
def test_offline_specs_check_their_resources(name, tmp_path):
    bad = AttackResources(nltk_data=str(NLTK_DIR), counterfitted_neighbors=str(tmp_path / "n"))
    key = "candidates" if name == "textfooler_offline" else "sub_w"
    spec = AttackSpec(recipe=name, options={key: "table"})
    _one_line_error(lambda: spec.check_resources(bad, name), name, "paths.counterfitted_neighbors")


@pytest.mark.parametrize("name", ["textfooler", "textbugger", "bertattack", "bae",
                                  "bertattack_robustt", "textdefender"])  # fmt: skip
def test_stock_specs_stop_offline(name, tmp_path, monkeypatch):
    import benchmark.attacks.external as ext

    monkeypatch.setattr(ext, "textattack_cache_dir", lambda: tmp_path / "ta_cache")
    monkeypatch.setattr(ext, "_hf_cached", lambda repo: False)
    bare = AttackResources(nltk_data=str(NLTK_DIR))
    key = "intentional_homoglyphs.txt" if name == "textbugger" else "paths."
    _one_line_error(lambda: AttackSpec(recipe=name).check_resources(bare, name), name, key)


# ----------------------------------------------------------------- homoglyph file


def test_intentional_parser_and_install(tmp_path, monkeypatch):
    import benchmark.attacks.external as ext
    from benchmark.attacks.resources import install_homoglyphs

    good = ("# intentional.txt\n0021 ;\t01C3 #* ( ! → ǃ ) EXCLAMATION MARK → LATIN LETTER "
            "RETROFLEX CLICK\n0061 ;\t0430 #* ( a → а ) LATIN SMALL LETTER A → CYRILLIC\n")  # fmt: skip
    assert parse_intentional(good) == [("!", "ǃ"), ("a", "а")]
    with pytest.raises(ValueError):
        parse_intentional("0061 ;\t0430 #* ( b → а ) wrong character\n")
    src = tmp_path / "intentional.txt"
    src.write_text(good, encoding="utf-8")
    dst = tmp_path / "pkg" / "intentional_homoglyphs.txt"
    dst.parent.mkdir()
    monkeypatch.setattr(ext, "homoglyph_file", lambda: dst)
    install_homoglyphs(src)
    # parsed exactly as WordSwapHomoglyphSwap does (4th and 8th character after '#')
    table: dict[str, list[str]] = {}
    for line in dst.read_text(encoding="utf-8-sig").splitlines():
        if line.strip() and not line.startswith("#"):
            data = line.replace("#*", "#").split("#", maxsplit=1)[1]
            table.setdefault(data[3], []).append(data[7])
    assert table == {"!": ["ǃ"], "a": ["а"]}


def test_query_budget_exhausted_counts_as_limit(tiny_wrapper, res, examples):
    """An attack stopped by its query budget before succeeding is `limit`, not `failed`."""
    spec = AttackSpec(recipe="deepwordbug", query_budget=2)
    attack = build_attack(spec, tiny_wrapper, res)
    summary, rows = run_attack(attack, examples, seed=3, progress=False, query_budget=2)
    limited = [r for r in rows if r["result"] == "limit"]
    assert limited and all(r["limit"] == "queries" and r["queries"] >= 2 for r in limited)
    assert summary.n_limit == len(limited)
    assert all(r["result"] != "failed" or r["queries"] < 2 for r in rows)


def test_without_bars_progress_is_a_periodic_log_line(tiny_wrapper, res, examples, caplog,
                                                      monkeypatch):  # fmt: skip
    """Under nohup, Slurm or CI (no bars) the attack logs lines, not carriage returns."""
    import logging

    from benchmark.attacks import adapter
    from benchmark.jobs.pipeline import show_bars

    assert show_bars(True) is False  # pytest's stderr is not a terminal
    monkeypatch.setattr(adapter, "PROGRESS_LOG_SECONDS", 0.0)
    attack = build_attack(AttackSpec(recipe="deepwordbug"), tiny_wrapper, res)
    with caplog.at_level(logging.INFO, logger="benchmark.attacks.adapter"):
        run_attack(attack, examples[:3], seed=3, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attack: ")]
    assert [x.split(" examples")[0] for x in lines] == ["attack: 1/3", "attack: 2/3",
                                                       "attack: 3/3"]  # fmt: skip
    assert "\r" not in caplog.text


def test_word_memo_splits_as_textattack_does():
    """The memoised word splitter returns TextAttack's lists (homoglyphs, inner apostrophes and
    hyphens, quotes, CJK, long texts, ignored words) as fresh lists a caller may change."""
    from textattack.shared.utils import strings

    from benchmark.attacks.components import MEMO_MAX_CHARS, memoised_words_from_text

    memo = memoised_words_from_text(strings.words_from_text)
    texts = ["don't", "'quoted'", "well-known", "e-mail@x.com", "ɑЬϲ", "a  b\tc", "", "!!!",
             "电影很好看", "word " * (MEMO_MAX_CHARS // 2), "Hello, World"]  # fmt: skip
    for text in texts + texts:  # the second pass is served by the memo where it applies
        assert memo(text) == strings.words_from_text(text)
    assert memo("the cat", ["the"]) == strings.words_from_text("the cat", ["the"]) == ["cat"]
    first = memo("Hello, World")
    first.append("changed")
    assert memo("Hello, World") == ["Hello", "World"]
    assert memo.memo.cache_info().hits > 0


def test_word_memo_leaves_the_attack_unchanged(tiny_wrapper, res, examples):
    """An attack logs the same rows with TextAttack's own splitter and with the memo that
    build_attack installs."""
    from textattack.shared import attacked_text

    spec = AttackSpec(recipe="textfooler_offline")
    attack = build_attack(spec, tiny_wrapper, res)  # installs the memo
    memo = attacked_text.words_from_text
    assert hasattr(memo, "memo")
    with_memo, without = _logs_with_and_without(attack, examples, attacked_text,
                                                "words_from_text", memo.original)  # fmt: skip
    assert with_memo == without


def _logs_with_and_without(attack, examples, owner, name, original):
    """The attack's log rows (times left out) with what ``build_attack`` installed at
    ``owner.name``, then with ``original`` there; the installed one is put back."""
    installed = getattr(owner, name)
    _, with_it = run_attack(attack, examples, seed=5, progress=False)
    setattr(owner, name, original)
    try:
        _, without = run_attack(attack, examples, seed=5, progress=False)
    finally:
        setattr(owner, name, installed)
    return _strip_time(with_it), _strip_time(without)


def _word_edits(rng, n: int, max_edits: int) -> list[tuple[str, str]]:
    """``n`` pairs (a 900-word text, the text with 1 to ``max_edits`` words changed by a
    DeepWordBug-like character swap at random places)."""
    words = [rng.choice(["film", "movie", "good", "bad", "the", "a", "was"]) for _ in range(900)]
    text = " ".join(words)
    pairs = []
    for _ in range(n):
        edited = list(words)
        for i in rng.sample(range(len(words)), rng.randint(1, max_edits)):
            w = edited[i]
            j = rng.randrange(len(w))
            edited[i] = w[:j] + rng.choice("xq") + w[j + 1 :]
        pairs.append((text, " ".join(edited)))
    return pairs


def test_trimmed_edit_distance_is_the_edit_distance():
    """Stripping the common prefix and suffix never changes a Levenshtein distance: random
    strings over a small alphabet (many shared affixes, repeats at the cut) and word edits
    of a long text, against editdistance on the whole strings."""
    import random

    import editdistance

    from benchmark.attacks.components import common_affix_lengths, trimmed_edit_distance

    rng = random.Random(0)
    for _ in range(3000):
        a = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.5:  # a shared prefix and suffix around the difference
            pre, suf = "".join(rng.choice("ab") for _ in range(5)), "ab" * rng.randint(0, 3)
            a, b = pre + a + suf, pre + b + suf
        assert trimmed_edit_distance(a, b, editdistance.eval) == editdistance.eval(a, b), (a, b)
    for text, other in _word_edits(rng, 50, 4):
        assert trimmed_edit_distance(text, other, editdistance.eval) == editdistance.eval(
            text, other
        )
    assert common_affix_lengths("abcab", "abcab") == (5, 0)
    assert common_affix_lengths("aXa", "aYa") == (1, 1)
    assert common_affix_lengths("aa", "aaa") == (2, 0)


def test_bounded_edit_distance_decides_as_the_edit_distance():
    """The constraint's question, ``distance <= bound``, has editdistance's answer: exact
    distances up to the bound, ``bound + 1`` beyond it (random strings and long word edits,
    bounds around the true distance)."""
    import random

    import editdistance

    from benchmark.attacks.components import bounded_edit_distance

    rng = random.Random(1)
    pairs = []
    for _ in range(2000):
        a = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 40)))
        pairs.append((a, b))
    pairs += _word_edits(rng, 60, 12)
    for a, b in pairs:
        exact = editdistance.eval(a, b)
        for bound in {0, 1, 5, 30, max(0, exact - 1), exact, exact + 1}:
            got = bounded_edit_distance(a, b, bound)
            assert got == min(exact, bound + 1), (a, b, bound)
            assert (got <= bound) == (exact <= bound)


def test_levenshtein_trim_leaves_the_attack_unchanged(tiny_wrapper, res, examples):
    """DeepWordBug logs the same rows with TextAttack's own edit-distance check and with the
    trimmed one that build_attack installs."""
    from textattack.constraints.overlap.levenshtein_edit_distance import LevenshteinEditDistance

    attack = build_attack(AttackSpec(recipe="deepwordbug"), tiny_wrapper, res)  # installs it
    trimmed = LevenshteinEditDistance._check_constraint
    assert getattr(trimmed, "trimmed", False)
    with_trim, without = _logs_with_and_without(attack, examples, LevenshteinEditDistance,
                                                "_check_constraint", trimmed.original)  # fmt: skip
    assert with_trim == without


def test_lazy_index_map_builds_the_same_texts():
    """The installed ``AttackedText.__init__`` gives what the original gives, attribute by
    attribute, for plain and paired inputs and for candidates made from a text; it raises the
    original's errors; only the eager word split is gone."""
    from collections import OrderedDict

    import numpy as np
    from textattack.shared.attacked_text import AttackedText

    from benchmark.attacks.components import install_lazy_index_map

    install_lazy_index_map()
    lazy, original = AttackedText.__init__, AttackedText.__init__.original

    def build(init, *args):
        AttackedText.__init__ = init
        try:
            return AttackedText(*args)
        finally:
            AttackedText.__init__ = lazy

    def same(a, b):
        assert a.text == b.text and a._text_input == b._text_input
        assert a.words == b.words and a.num_words == b.num_words
        assert a.attack_attrs.keys() == b.attack_attrs.keys()
        for key, val in a.attack_attrs.items():
            other = b.attack_attrs[key]
            assert np.array_equal(val, other) if isinstance(val, np.ndarray) else val == other

    pair = OrderedDict([("premise", "A man, a plan."), ("hypothesis", "Panama!")])
    for args in [("The film was not good, but it's fine.",), (pair,), ("",),
                 ("x y", {"label_names": ["a"]}),
                 ("x y", {"original_index_map": np.array([4, 7]), "modified_indices": {1}})]:  # fmt: skip
        same(build(lazy, *args), build(original, *args))
    base = build(original, "the movie was bad and the plot was worse")
    new_words = ["the", "film", "was", "bad", "and", "the", "plot", "", "worse"]
    ours = base.generate_new_attacked_text(new_words)  # the installed __init__
    AttackedText.__init__ = original
    try:
        theirs = base.generate_new_attacked_text(new_words)
    finally:
        AttackedText.__init__ = lazy
    assert ours._words is None  # not split on creation
    same(ours, theirs)
    for bad in [(3,), ("x", ["not", "a", "dict"])]:
        with pytest.raises(TypeError):
            build(lazy, *bad)


def test_lazy_index_map_leaves_the_attack_unchanged(tiny_wrapper, res, examples):
    """DeepWordBug and textfooler_offline log the same rows with the original
    ``AttackedText.__init__`` and with the one build_attack installs."""
    from textattack.shared.attacked_text import AttackedText

    for recipe in ("deepwordbug", "textfooler_offline"):
        attack = build_attack(AttackSpec(recipe=recipe), tiny_wrapper, res)  # installs it
        lazy = AttackedText.__init__
        assert getattr(lazy, "lazy", False)
        with_it, without = _logs_with_and_without(attack, examples, AttackedText, "__init__",
                                                  lazy.original)  # fmt: skip
        assert with_it == without, recipe
