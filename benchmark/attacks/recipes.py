"""Named attack configurations: one builder per name, each assembling TextAttack components.

Every builder starts from a TextAttack recipe's own ``build`` so that everything it does not
name (stopwords, pre-transformation constraints, goal, search) is the recipe as shipped.
Components that a configuration changes are swapped while the recipe builds
(:func:`_swapped`), so a replaced component is never constructed (no download of a resource
the configuration does not use). See docs/attacks.md for each name's deviations.

Resources come from :class:`~benchmark.attacks.external.AttackResources` (``paths`` keys).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from benchmark.attacks.external import (
    DEFAULT_MASKED_LM,
    AttackResources,
    embeddings_folder,
    load_counterfitted_embedding,
    load_neighbor_table,
    resolve_encoder_path,
)

if TYPE_CHECKING:
    from benchmark.attacks.adapter import AttackSpec

log = logging.getLogger(__name__)

_POS = ("stopwords", "pos_tagger", "universal_tagset")
_RECIPE_MODULE = "textattack.attack_recipes.{}"


def _recipe(module: str, cls: str):
    mod = importlib.import_module(_RECIPE_MODULE.format(module))
    return mod, getattr(mod, cls)


@contextmanager
def _swapped(module: ModuleType, **names: Any) -> Iterator[None]:
    """Temporarily replace names in a recipe module while its ``build`` runs."""
    old = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def _rebuild(attack, drop: tuple[type, ...] = (), add: tuple = (), transformation=None):
    """A plain ``textattack.Attack`` from ``attack``'s parts, minus/plus constraints."""
    from textattack import Attack

    constraints = [c for c in attack.constraints if not isinstance(c, drop)] + list(add)
    return Attack(
        attack.goal_function, constraints + attack.pre_transformation_constraints,
        transformation or attack.transformation, attack.search_method,
    )  # fmt: skip


def _use_embeddings(res: AttackResources) -> None:
    """Make TextAttack use the configured counter-fitted embeddings (else its own path)."""
    folder = embeddings_folder(res)
    if folder is not None:
        load_counterfitted_embedding(folder)


def _set_use_path(attack, res: AttackResources) -> None:
    """Point every Universal Sentence Encoder at ``paths.use_model`` when it is set."""
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder

    if res.use_model:
        for c in attack.constraints:
            if isinstance(c, UniversalSentenceEncoder):
                c._tfhub_url = str(res.use_model)


def _masked_lm(res: AttackResources) -> Callable[..., Any]:
    """``WordSwapMaskedLM`` factory loading the masked LM from ``paths.masked_lm``."""
    from textattack.transformations import WordSwapMaskedLM

    def make(**kwargs: Any):
        kwargs.pop("masked_language_model", None)
        return WordSwapMaskedLM(masked_language_model=res.masked_lm or DEFAULT_MASKED_LM, **kwargs)

    return make


def _local_encoder(res: AttackResources) -> Callable[..., Any]:
    """Factory standing in for ``UniversalSentenceEncoder``: same keywords, local model.

    Threshold rule (fixed before any result): the recipe's USE keywords (threshold, metric,
    window, comparison) are passed unchanged; only the encoder differs.
    """
    from benchmark.attacks.components import LocalSentenceEncoder

    path = resolve_encoder_path(res.sentence_encoder)

    def make(threshold: float = 0.8, metric: str = "angular", large: bool = False, **kwargs: Any):
        del large  # USE-large vs USE: no counterpart
        return LocalSentenceEncoder(str(path), threshold=threshold, metric=metric, **kwargs)

    return make


def _word_candidates(choice: str, res: AttackResources) -> str:
    """Resolve ``auto`` to ``embedding`` (counter-fitted vectors present) or ``table``."""
    if choice == "auto":
        return "embedding" if embeddings_folder(res) is not None else "table"
    if choice not in ("embedding", "table", "none"):
        raise ValueError(f"unknown word-candidate source {choice!r} (auto|embedding|table|none)")
    return choice


# --------------------------------------------------------------------------- builders
# Each builder: (model_wrapper, options, resources) -> (textattack.Attack, info dict).


@contextmanager
def _no_nltk_downloads() -> Iterator[None]:
    """Turn ``nltk.download`` into a no-op while a recipe builds.

    ``WordSwapWordNet`` (PWWS) calls ``nltk.download("omw-1.4")`` on every construction: a
    network request inside a run (minutes of timeouts offline). English WordNet does not need
    omw-1.4; the WordNet data itself is checked beforehand (``benchmark.attacks.resources.check``).
    """
    import nltk

    real = nltk.download

    def skip(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        log.debug("skipped nltk.download(%r) during an attack build", info_or_id)
        return True

    nltk.download = skip
    try:
        yield
    finally:
        nltk.download = real


def build_stock(module: str, cls: str) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """A builder for a recipe that needs no external resource beyond NLTK (as shipped)."""

    def build(wrapper, opts: dict[str, Any], res: AttackResources):
        with _no_nltk_downloads():
            return _recipe(module, cls)[1].build(wrapper), {}

    return build


def build_textfooler(wrapper, opts: dict[str, Any], res: AttackResources):
    """TextFoolerJin2019 as shipped (counter-fitted embeddings, USE from paths)."""
    _use_embeddings(res)
    attack = _recipe("textfooler_jin_2019", "TextFoolerJin2019")[1].build(wrapper)
    _set_use_path(attack, res)
    return attack, {}


def build_textbugger(wrapper, opts: dict[str, Any], res: AttackResources):
    """TextBuggerLi2018 as shipped (needs TextAttack's intentional homoglyph file)."""
    _use_embeddings(res)
    attack = _recipe("textbugger_li_2018", "TextBuggerLi2018")[1].build(wrapper)
    _set_use_path(attack, res)
    return attack, {}


def _build_masked_lm_recipe(module: str, cls_name: str):
    """A stock recipe whose masked LM comes from ``paths.masked_lm``."""

    def build(wrapper, opts: dict[str, Any], res: AttackResources):
        mod, cls = _recipe(module, cls_name)
        with _swapped(mod, WordSwapMaskedLM=_masked_lm(res)):
            attack = cls.build(wrapper)
        _set_use_path(attack, res)
        return attack, {"masked_lm": res.masked_lm or DEFAULT_MASKED_LM}

    build.__doc__ = f"{cls_name} as shipped, its masked LM from ``paths.masked_lm``."
    return build


build_bertattack = _build_masked_lm_recipe("bert_attack_li_2020", "BERTAttackLi2020")
build_bae = _build_masked_lm_recipe("bae_garg_2019", "BAEGarg2019")  # BAE-R


def build_bertattack_robustt(wrapper, opts: dict[str, Any], res: AttackResources):
    """RobustT's "BERT-Attack": the BAE recipe with embedding swaps and USE threshold 0.2.

    As robust_ticket's ``build_weak_attacker``: transformation ``WordSwapEmbedding(50)``
    (no masked LM), BAE's USE replaced by USE(threshold 0.2, cosine, against the original,
    window 15, no skipping of short texts); BAE's PartOfSpeech constraint kept.
    """
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder
    from textattack.transformations import WordSwapEmbedding

    _use_embeddings(res)
    n = int(opts.get("max_candidates", 50))
    use_kwargs = {
        "threshold": float(opts.get("use_threshold", 0.2)), "metric": "cosine",
        "compare_against_original": True, "window_size": 15,
        "skip_text_shorter_than_window": False,
    }  # fmt: skip
    mod, cls = _recipe("bae_garg_2019", "BAEGarg2019")
    with _swapped(
        mod, WordSwapMaskedLM=lambda **_: WordSwapEmbedding(max_candidates=n),
        UniversalSentenceEncoder=lambda **_: UniversalSentenceEncoder(**use_kwargs),
    ):  # fmt: skip
        attack = _rebuild(cls.build(wrapper))  # a plain Attack, as robust_ticket re-wraps it
    _set_use_path(attack, res)
    return attack, {}


def build_textdefender(wrapper, opts: dict[str, Any], res: AttackResources):
    """TextDefender-style TextFooler: 50 embedding neighbours, <= 30% words, USE 0.84.

    TextFooler recipe with ``WordSwapEmbedding(50)``, its WordEmbeddingDistance(0.5) and USE
    removed, then ``MaxWordsPerturbed(max_percent=0.3)`` and USE(threshold 0.84, cosine,
    against the original, window 15, skipping texts shorter than the window) added.
    """
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder
    from textattack.transformations import WordSwapEmbedding

    from benchmark.attacks.components import Removed

    _use_embeddings(res)
    n = int(opts.get("max_candidates", 50))
    use_kwargs = {
        "threshold": float(opts.get("use_threshold", 0.84)), "metric": "cosine",
        "compare_against_original": True, "window_size": 15,
        "skip_text_shorter_than_window": True,
    }  # fmt: skip
    mod, cls = _recipe("textfooler_jin_2019", "TextFoolerJin2019")
    with _swapped(
        mod, WordSwapEmbedding=lambda **_: WordSwapEmbedding(max_candidates=n),
        WordEmbeddingDistance=Removed,
        UniversalSentenceEncoder=lambda **_: UniversalSentenceEncoder(**use_kwargs),
    ):  # fmt: skip
        attack = cls.build(wrapper)
    max_percent = float(opts.get("max_percent", 0.3))
    attack = _rebuild(attack, drop=(Removed,), add=(MaxWordsPerturbed(max_percent=max_percent),))
    _set_use_path(attack, res)
    return attack, {}


def _swap_factory(source: str, res: AttackResources, n: int | None):
    """A factory for the recipe's ``WordSwapEmbedding`` slot: table or real vectors."""
    from textattack.transformations import WordSwapEmbedding

    from benchmark.attacks.components import WordSwapNeighborTable

    def make(max_candidates: int = 15, **kwargs: Any):
        k = n or max_candidates
        if source == "table":
            return WordSwapNeighborTable(
                load_neighbor_table(str(res.counterfitted_neighbors)), max_candidates=k
            )
        if source == "embedding":
            return WordSwapEmbedding(max_candidates=k, **kwargs)
        from benchmark.attacks.components import NoWordSwap

        return NoWordSwap()  # "none": removed from the composite after building

    return make


def build_textfooler_offline(wrapper, opts: dict[str, Any], res: AttackResources):
    """TextFooler with local resources: neighbour table (or local vectors) and MiniLM.

    ``candidates: auto`` takes the counter-fitted vectors when a local copy is present
    (TextFooler's own 50 neighbours and WordEmbeddingDistance(0.5)); otherwise the neighbour
    table, at most ``max_candidates`` (8) per word, without WordEmbeddingDistance (no vectors;
    the table's neighbours are already counter-fitted nearest neighbours). USE is replaced by
    the local encoder with TextFooler's USE settings. POS constraint: NLTK's tagger, as shipped.
    """
    from benchmark.attacks.components import Removed

    source = _word_candidates(str(opts.get("candidates", "auto")), res)
    if source == "none":
        raise ValueError("textfooler_offline needs word candidates (auto|embedding|table)")
    if source == "embedding":
        _use_embeddings(res)
    n = int(opts.get("max_candidates", 8)) if source == "table" else None
    names: dict[str, Any] = {
        "WordSwapEmbedding": _swap_factory(source, res, n),
        "UniversalSentenceEncoder": _local_encoder(res),
    }
    if source == "table":
        names["WordEmbeddingDistance"] = Removed
    mod, cls = _recipe("textfooler_jin_2019", "TextFoolerJin2019")
    with _swapped(mod, **names):
        attack = _rebuild(cls.build(wrapper), drop=(Removed,))
    return attack, {"candidates": source, "max_candidates": n or 50,
                    "sentence_encoder": res.sentence_encoder}  # fmt: skip


def build_textbugger_offline(wrapper, opts: dict[str, Any], res: AttackResources):
    """TextBugger with local resources: its character operations and a local encoder.

    Character operations as shipped (insert space, delete, swap neighbours, homoglyph via the
    class's built-in table, see ``HomoglyphSwapBuiltin``). Sub-W (TextBugger's word swap,
    ``WordSwapEmbedding(5)``): ``sub_w: auto`` uses local counter-fitted vectors when present,
    else the neighbour table (5 per word); ``none`` drops it. USE(0.8) replaced by the local
    encoder with the same settings.
    """
    from textattack.transformations import CompositeTransformation

    from benchmark.attacks.components import HomoglyphSwapBuiltin, NoWordSwap

    source = _word_candidates(str(opts.get("sub_w", "auto")), res)
    if source == "embedding":
        _use_embeddings(res)
    mod, cls = _recipe("textbugger_li_2018", "TextBuggerLi2018")
    with _swapped(
        mod, WordSwapHomoglyphSwap=HomoglyphSwapBuiltin,
        WordSwapEmbedding=_swap_factory(source, res, None),
        UniversalSentenceEncoder=_local_encoder(res),
    ):  # fmt: skip
        attack = cls.build(wrapper)
    parts = [t for t in attack.transformation.transformations if not isinstance(t, NoWordSwap)]
    attack = _rebuild(attack, transformation=CompositeTransformation(parts))
    return attack, {"sub_w": source, "sentence_encoder": res.sentence_encoder}


# --------------------------------------------------------------------------- table


def _fixed(*kinds: str) -> Callable[[dict[str, Any], AttackResources], list[str]]:
    return lambda opts, res: list(kinds)


def _offline_kinds(key: str) -> Callable[[dict[str, Any], AttackResources], list[str]]:
    def kinds(opts: dict[str, Any], res: AttackResources) -> list[str]:
        source = _word_candidates(str(opts.get(key, "auto")), res)
        words = {"table": ["counterfitted_neighbors"], "embedding": [], "none": []}[source]
        return [*words, "sentence_encoder"]

    return kinds


@dataclass(frozen=True)
class RecipeDef:
    """One named attack configuration.

    Attributes:
        build: ``(wrapper, options, resources) -> (Attack, info)``.
        base: the TextAttack recipe class it starts from.
        nltk: NLTK resources it needs (``benchmark.attacks.resources.NLTK_RESOURCES`` keys).
        external: ``(options, resources) -> kinds`` of ``external.CHECKS`` it needs.
    """

    build: Callable[..., tuple[Any, dict[str, Any]]]
    base: str
    nltk: tuple[str, ...] = ("stopwords",)
    external: Callable[[dict[str, Any], AttackResources], list[str]] = field(default=_fixed())


BUILDERS: dict[str, RecipeDef] = {
    "deepwordbug": RecipeDef(build_stock("deepwordbug_gao_2018", "DeepWordBugGao2018"),
                             "DeepWordBugGao2018"),
    "pwws": RecipeDef(build_stock("pwws_ren_2019", "PWWSRen2019"), "PWWSRen2019",
                      ("stopwords", "wordnet")),
    "textfooler": RecipeDef(build_textfooler, "TextFoolerJin2019", _POS,
                            _fixed("counterfitted_embeddings", "use")),
    "textbugger": RecipeDef(build_textbugger, "TextBuggerLi2018", ("stopwords",),
                            _fixed("homoglyphs", "counterfitted_embeddings", "use")),
    "bertattack": RecipeDef(build_bertattack, "BERTAttackLi2020", ("stopwords",),
                            _fixed("masked_lm", "use")),
    "bae": RecipeDef(build_bae, "BAEGarg2019", _POS, _fixed("masked_lm", "use")),
    "bertattack_robustt": RecipeDef(build_bertattack_robustt, "BAEGarg2019", _POS,
                                    _fixed("counterfitted_embeddings", "use")),
    "textdefender": RecipeDef(build_textdefender, "TextFoolerJin2019", _POS,
                              _fixed("counterfitted_embeddings", "use")),
    "textfooler_offline": RecipeDef(build_textfooler_offline, "TextFoolerJin2019", _POS,
                                    _offline_kinds("candidates")),
    "textbugger_offline": RecipeDef(build_textbugger_offline, "TextBuggerLi2018",
                                    ("stopwords",), _offline_kinds("sub_w")),
}  # fmt: skip


def recipe_def(name: str) -> RecipeDef:
    """The definition of attack ``name``; unknown names list the valid ones."""
    if name not in BUILDERS:
        import difflib

        close = difflib.get_close_matches(name, list(BUILDERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown attack recipe {name!r}{hint}; valid: {', '.join(BUILDERS)}")
    return BUILDERS[name]


def check_attack_resources(spec: AttackSpec, res: AttackResources, attack: str) -> None:
    """Raise ``UserError`` for the first missing resource (NLTK first, then external)."""
    from benchmark.attacks.external import check_external
    from benchmark.attacks.resources import check

    d = recipe_def(spec.recipe)
    check(list(spec.resources) or list(d.nltk), res.nltk_data, attack)
    check_external(d.external(dict(spec.options), res), res, attack)


# --------------------------------------------------------------------------- threat models
# What each name's attack may do, as declared settings (read off the TextAttack 0.3.11 recipes
# and the builders above), not by building the attack: --plan and skip-existing need no
# resources. Keys: the search, the candidates per word, the largest fraction of words that may
# change (None = no cap), the character edit cap, the sentence-similarity model and threshold.
# A change of any value here is a new threat model (its hash, part of the run id, changes).

_USE = "Universal Sentence Encoder (TF-Hub)"
_LOCAL_ENCODER = "all-MiniLM-L6-v2 standing in for USE (paths.sentence_encoder)"


def _similarity(model: str | None, threshold: float | None = None, metric: str | None = None,
                window: int | None = None) -> dict[str, Any] | None:  # fmt: skip
    if model is None:
        return None
    return {"model": model, "threshold": threshold, "metric": metric, "window": window}


def _declared(recipe: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The declared settings of one name's attack under its options."""
    greedy = "greedy word-importance ranking"
    if recipe == "deepwordbug":
        return {"search": f"{greedy} (unk)", "transformation": "4 character edits",
                "candidates_per_word": None, "max_words_perturbed": None,
                "max_char_edit_distance": 30, "similarity": None}  # fmt: skip
    if recipe == "pwws":
        return {"search": f"{greedy} (weighted saliency)", "transformation": "WordNet synonyms",
                "candidates_per_word": None, "max_words_perturbed": None,
                "max_char_edit_distance": None, "similarity": None}  # fmt: skip
    if recipe == "textfooler":
        return {"search": f"{greedy} (delete)", "transformation": "counter-fitted embedding swap",
                "candidates_per_word": 50, "min_cos_sim": 0.5, "max_words_perturbed": None,
                "max_char_edit_distance": None,
                "similarity": _similarity(_USE, 0.840845057, "angular", 15)}  # fmt: skip
    if recipe == "textfooler_offline":
        return {"search": f"{greedy} (delete)",
                "transformation": f"counter-fitted neighbours ({opts.get('candidates', 'auto')})",
                "candidates_per_word": int(opts.get("max_candidates", 8)),
                "candidates_per_word_with_vectors": 50, "max_words_perturbed": None,
                "max_char_edit_distance": None,
                "similarity": _similarity(_LOCAL_ENCODER, 0.840845057, "angular", 15)}  # fmt: skip
    if recipe == "textbugger":
        return {"search": f"{greedy} (delete)",
                "transformation": "character edits, homoglyphs, embedding swap",
                "candidates_per_word": 5, "max_words_perturbed": None,
                "max_char_edit_distance": None,
                "similarity": _similarity(_USE, 0.8, "angular", None)}  # fmt: skip
    if recipe == "textbugger_offline":
        return {"search": f"{greedy} (delete)",
                "transformation": f"character edits, built-in homoglyphs, sub-W "
                                  f"({opts.get('sub_w', 'auto')})",
                "candidates_per_word": 5, "max_words_perturbed": None,
                "max_char_edit_distance": None,
                "similarity": _similarity(_LOCAL_ENCODER, 0.8, "angular", None)}  # fmt: skip
    if recipe == "bertattack":
        return {"search": f"{greedy} (unk)", "transformation": "masked LM (bert-attack)",
                "candidates_per_word": 8, "max_words_perturbed": 0.4,
                "max_char_edit_distance": None,
                "similarity": _similarity(_USE, 0.2, "cosine", None)}  # fmt: skip
    if recipe == "bae":
        return {"search": f"{greedy} (delete)", "transformation": "masked LM (bae, replace)",
                "candidates_per_word": 50, "max_words_perturbed": None,
                "max_char_edit_distance": None,
                "similarity": _similarity(_USE, 0.936338023, "cosine", 15)}  # fmt: skip
    if recipe == "bertattack_robustt":
        return {"search": f"{greedy} (delete)", "transformation": "counter-fitted embedding swap",
                "candidates_per_word": int(opts.get("max_candidates", 50)),
                "max_words_perturbed": None, "max_char_edit_distance": None,
                "similarity": _similarity(_USE, float(opts.get("use_threshold", 0.2)),
                                          "cosine", 15)}  # fmt: skip
    if recipe == "textdefender":
        return {"search": f"{greedy} (delete)", "transformation": "counter-fitted embedding swap",
                "candidates_per_word": int(opts.get("max_candidates", 50)),
                "max_words_perturbed": float(opts.get("max_percent", 0.3)),
                "max_char_edit_distance": None,
                "similarity": _similarity(_USE, float(opts.get("use_threshold", 0.84)),
                                          "cosine", 15)}  # fmt: skip
    if recipe == "transfer":
        return {"search": "none: the source log's adversarial texts, replayed",
                "transformation": "those of the source attack", "candidates_per_word": None,
                "max_words_perturbed": None, "max_char_edit_distance": None,
                "similarity": None}  # fmt: skip
    raise ValueError(f"no declared threat model for attack recipe {recipe!r}")


def textattack_version() -> str | None:
    """The installed TextAttack version (from the package metadata; nothing is imported)."""
    from importlib import metadata

    try:
        return metadata.version("textattack")
    except metadata.PackageNotFoundError:
        return None


def threat_model(attack: dict[str, Any], textattack: str | None = None) -> dict[str, Any] | None:
    """The threat model of a resolved ``attack`` config: the recipe's declared settings, the
    query budget and per-example limits, the TextAttack version (the installed one unless
    ``textattack`` names another: a migrated record's), and ``hash``, a short hash of all of
    them (part of the run id). None for ``recipe: none``; a cascade's is the ordered list of
    its recipes' (:func:`benchmark.attacks.cascade.threat_model`)."""
    from benchmark.records.store import short_hash

    recipe = str(attack.get("recipe", "none"))
    if recipe == "none":
        return None
    if recipe == "cascade":  # the ordered list of its recipes' threat models
        from benchmark.attacks.cascade import threat_model as cascade_threat_model

        return cascade_threat_model(attack, textattack)
    block = {
        "recipe": recipe, "version": attack.get("version"),
        **_declared(recipe, dict(attack.get("options") or {})),
        "query_budget": attack.get("query_budget"),
        "max_seconds_per_example": attack.get("max_seconds_per_example"),
        "textattack": textattack or textattack_version(),
    }  # fmt: skip
    return {**block, "hash": short_hash(block, 10)}


def threat_model_caption(block: dict[str, Any] | None) -> str:
    """One line naming a threat model for a table caption."""
    if not block:
        return "no attack"
    if block.get("recipe") == "cascade":
        from benchmark.attacks.cascade import caption

        return caption(block)
    sim = block.get("similarity")
    parts = [
        f"{block['recipe']} v{block.get('version')}",
        f"candidates/word {block.get('candidates_per_word') or '-'}",
        f"max words perturbed {block.get('max_words_perturbed') or 'no cap'}",
        f"similarity {sim['model']} >= {sim['threshold']}" if sim else "no similarity check",
        f"query budget {block.get('query_budget') or 'none'}",
        f"per-example limit {block.get('max_seconds_per_example') or 'none'} s",
        f"TextAttack {block.get('textattack')}",
        f"threat model {block['hash']}",
    ]
    return ", ".join(parts)
