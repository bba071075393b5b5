"""TextAttack components of the offline attack variants.

Imported lazily by :mod:`benchmark.attacks.recipes` (importing TextAttack needs NLTK's
stopwords, see :mod:`benchmark.attacks.resources`).
"""

from __future__ import annotations

import io
import logging
import sys
import time
from functools import lru_cache
from typing import Any

import torch
from textattack.constraints import Constraint
from textattack.constraints.semantics.sentence_encoders import SBERT
from textattack.shared import utils as ta_utils
from textattack.transformations import WordSwap, WordSwapHomoglyphSwap
from textattack.transformations.word_swaps.word_swap_embedding import recover_word_case

log = logging.getLogger(__name__)


class WordSwapNeighborTable(WordSwap):
    """Swap a word for one of its counter-fitted neighbours from a precomputed table.

    The table (``counterfitted_neighbors.json``, Jia et al. 2019) lists at most 8 neighbours
    per word, derived from the counter-fitted vectors of Mrksic et al. (2016); TextFooler's
    ``WordSwapEmbedding`` takes the 50 nearest neighbours of the vectors themselves. Lookup and
    case restoration follow ``WordSwapEmbedding``.
    """

    def __init__(self, table: dict[str, list[str]], max_candidates: int = 8, **kwargs: Any):
        """Args: the neighbour table, the number of neighbours to take per word."""
        super().__init__(**kwargs)
        self.table = table
        self.max_candidates = max_candidates

    def _get_replacement_words(self, word: str) -> list[str]:
        lower = word.lower()
        neighbours = [n for n in self.table.get(lower, []) if n != lower and "_" not in n]
        return [recover_word_case(n, word) for n in neighbours[: self.max_candidates]]

    def extra_repr_keys(self) -> list[str]:
        """Fields shown in the attack's repr."""
        return ["max_candidates"]


@lru_cache(maxsize=2)
def _sentence_transformer(path: str, device: str):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device)
    model.eval()
    return model


class LocalSentenceEncoder(SBERT):
    """TextAttack's SBERT constraint with a local sentence-transformers model.

    Stands in for the Universal Sentence Encoder in the ``*_offline`` attacks, with the
    recipe's own metric, threshold, window and comparison (the rule in docs/attacks.md). The
    model is loaded once per process; encoding is batched without gradients.
    """

    def __init__(self, model_path: str, batch_size: int = 128, **kwargs: Any):
        """Args: the model folder, the encoding batch size, SentenceEncoder's keywords."""
        # Skip SBERT.__init__ (it would load the model again); same attributes as SBERT.
        super(SBERT, self).__init__(**kwargs)
        self.model_path = model_path
        self.batch_size = batch_size
        self.model = _sentence_transformer(model_path, str(ta_utils.device))
        self.n_encoded, self.encode_seconds = 0, 0.0  # cumulative (scripts/bench_attack.py)
        self.reset_cache()

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """Embeddings of ``sentences`` (CPU tensor), each distinct text encoded once.

        TextAttack sends the starting text's window once per candidate, and the same windows
        again at every search step: distinct texts not seen before in this example are encoded
        (batched); the rest come from a per-example cache (:meth:`reset_cache`).
        """
        todo = list(dict.fromkeys(t for t in sentences if t not in self._cache))
        if todo:
            start = time.perf_counter()
            with torch.no_grad():
                emb = self.model.encode(
                    todo, batch_size=self.batch_size, show_progress_bar=False,
                    convert_to_tensor=True,
                )  # fmt: skip
            self._cache.update(zip(todo, emb.float().cpu(), strict=True))
            self.n_encoded += len(todo)
            self.encode_seconds += time.perf_counter() - start
        return torch.stack([self._cache[t] for t in sentences])

    def reset_cache(self) -> None:
        """Forget cached embeddings (called before each example, so that an example's result
        never depends on which examples ran before it in the same process)."""
        self._cache: dict[str, torch.Tensor] = {}

    def extra_repr_keys(self) -> list[str]:
        """Fields shown in the attack's repr."""
        return ["model_path", *super().extra_repr_keys()]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the model (reloaded from ``model_path``)."""
        state = self.__dict__.copy()
        state["model"] = None
        state["_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Reload the model after unpickling."""
        self.__dict__ = state
        self.model = _sentence_transformer(self.model_path, str(ta_utils.device))


class HomoglyphSwapBuiltin(WordSwapHomoglyphSwap):
    """``WordSwapHomoglyphSwap`` without Unicode's intentional homoglyph file.

    In a word-swap search (TextBugger's greedy search) the class uses only its built-in
    one-glyph-per-character table ``homos``; the file it opens at construction
    (``textattack/shared/intentional_homoglyphs.txt``, missing from the 0.3.11 wheel) feeds
    only the differential-evolution interface (``homos_intentional``). This subclass builds the
    same object with ``homos_intentional`` empty, so TextBugger's candidates are unchanged.
    """

    def __init__(self, random_one: bool = False, **kwargs: Any):
        """Args as ``WordSwapHomoglyphSwap``."""
        module = sys.modules[WordSwapHomoglyphSwap.__module__]
        module.open = lambda *_a, **_k: io.StringIO("")  # type: ignore[attr-defined]
        try:
            super().__init__(random_one=random_one, **kwargs)
        finally:
            del module.open  # type: ignore[attr-defined]

    def _get_precomputed(self, current_text):  # pragma: no cover - DE search only
        raise NotImplementedError("differential evolution needs intentional_homoglyphs.txt")


class NoWordSwap(WordSwap):
    """Placeholder for a word swap a variant drops (no candidates); filtered out after building."""

    def _get_replacement_words(self, word: str) -> list[str]:
        return []


class Removed(Constraint):
    """Placeholder for a recipe constraint a variant drops; filtered out after building."""

    def __init__(self, *_args: Any, **_kwargs: Any):
        """Accepts and ignores the replaced constraint's arguments."""
        super().__init__(compare_against_original=True)

    def _check_constraint(self, transformed_text, reference_text) -> bool:  # pragma: no cover
        return True


# --------------------------------------------------------------- word splitting, memoised

MEMO_MAX_CHARS = 64
"""Strings up to this length go through the memo (words; whole texts are split once each)."""


def memoised_words_from_text(original):
    """``original`` (TextAttack's ``words_from_text``, a pure function of its arguments) with a
    memo for short strings and the default ``words_to_ignore``.

    TextAttack builds every candidate text of a word-level attack with
    ``AttackedText.generate_new_attacked_text``, which splits each of the text's words again
    (``attacked_text.py:450-452``): O(words) regex work per candidate and O(words^2) per
    search step. On the longest IMDB reviews (about 860 words) that was 38 s of a 198 s
    DeepWordBug example (1.3 million calls, cProfile). The words repeat from candidate to
    candidate, so a memo returns the same lists (fresh copies: callers may change them)."""

    @lru_cache(maxsize=2**16)
    def split(text: str) -> tuple[str, ...]:
        return tuple(original(text))

    def words_from_text(s, words_to_ignore=()):
        if words_to_ignore or not isinstance(s, str) or len(s) > MEMO_MAX_CHARS:
            return original(s, list(words_to_ignore)) if words_to_ignore else original(s)
        return list(split(s))

    words_from_text.original = original
    words_from_text.memo = split
    return words_from_text


def install_word_memo() -> None:
    """Route ``AttackedText``'s word splitting through :func:`memoised_words_from_text`
    (once per process; results are identical, tested against the original)."""
    from textattack.shared import attacked_text

    if not hasattr(attacked_text.words_from_text, "memo"):
        attacked_text.words_from_text = memoised_words_from_text(attacked_text.words_from_text)


# ------------------------------------------------ candidate texts without an eager word split


def install_lazy_index_map() -> None:
    """Give TextAttack's ``AttackedText`` an ``__init__`` that splits the text into words only
    when ``original_index_map`` is missing (once per process).

    The original (``attacked_text.py:47-75``) ends with
    ``attack_attrs.setdefault("original_index_map", np.arange(self.num_words))``, whose
    default is evaluated even when the key is there, as it always is for a candidate made by
    ``generate_new_attacked_text``: every candidate text is split into words on creation
    (3-6 ms for a long IMDB review, 28 s of the six longest reviews' DeepWordBug run under
    cProfile), though most candidates are scored and dropped without their words ever being
    read. The words are a pure function of the text (the ``words`` property computes them on
    first use), so skipping the unused split changes nothing; every other step is the
    original's (tested attribute by attribute and with an attack's log)."""
    from collections import OrderedDict

    import numpy as np
    from textattack.shared.attacked_text import AttackedText

    if getattr(AttackedText.__init__, "lazy", False):
        return

    def __init__(self, text_input, attack_attrs=None):
        if isinstance(text_input, str):
            text_input = OrderedDict([("text", text_input)])
        elif not isinstance(text_input, OrderedDict):
            raise TypeError(
                f"Invalid text_input type {type(text_input)} (required str or OrderedDict)"
            )
        self._text_input = OrderedDict(list(text_input.items()))
        self._words = None
        self._words_per_input = None
        self._pos_tags = None
        self._ner_tags = None
        if attack_attrs is None:
            attack_attrs = {}
        elif not isinstance(attack_attrs, dict):
            raise TypeError(f"Invalid type for attack_attrs: {type(attack_attrs)}")
        self.attack_attrs = attack_attrs
        if "original_index_map" not in attack_attrs:
            attack_attrs["original_index_map"] = np.arange(self.num_words)
        attack_attrs.setdefault("modified_indices", set())

    __init__.lazy = True
    __init__.original = AttackedText.__init__
    AttackedText.__init__ = __init__


# ------------------------------------------------------- edit distance on the changed part only


def common_affix_lengths(a: str, b: str) -> tuple[int, int]:
    """Lengths of the longest common prefix of ``a`` and ``b`` and of the longest common suffix
    of what remains after it (binary search over slice comparisons: C-speed on long texts)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    pre = lo
    lo, hi = 0, min(len(a), len(b)) - pre
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return pre, lo


def trimmed_edit_distance(a: str, b: str, distance) -> int:
    """``distance(a, b)`` (a Levenshtein distance) computed on the two strings without their
    common prefix and suffix, which never changes a Levenshtein distance: an optimal
    alignment can always match equal leading (and trailing) characters with each other."""
    pre, suf = common_affix_lengths(a, b)
    return distance(a[pre : len(a) - suf], b[pre : len(b) - suf])


def bounded_edit_distance(a: str, b: str, bound: int) -> int:
    """The Levenshtein distance of ``a`` and ``b`` where it is at most ``bound``, else
    ``bound + 1``, on the changed span (:func:`trimmed_edit_distance`) by the bit-parallel
    algorithm of ``Levenshtein`` (rapidfuzz) with that cutoff.

    ``distance <= bound`` is then exactly ``editdistance.eval(a, b) <= bound`` (unit costs in
    both; tested against editdistance). Measured on a 5,112-character review with four edited
    words far apart (a 5,025-character span): editdistance 53 ms, this 0.05 ms."""
    import Levenshtein

    return trimmed_edit_distance(a, b, lambda x, y: Levenshtein.distance(x, y, score_cutoff=bound))


def install_levenshtein_trim() -> None:
    """Route TextAttack's ``LevenshteinEditDistance`` (DeepWordBug's constraint) through
    :func:`bounded_edit_distance` (once per process).

    The constraint compares the WHOLE candidate text with the original for every candidate
    (``levenshtein_edit_distance.py``, ``editdistance.eval(reference_text.text,
    transformed_text.text)``) and keeps it when the distance is at most ``max_edit_distance``
    (30 for DeepWordBug). On the longest IMDB reviews (about 5,000 characters) that was about
    12 s of an 86 s DeepWordBug example; with the common prefix and suffix stripped it was
    still 14 ms a candidate once the changed words lie far apart (31 s of the six longest
    reviews under cProfile), since an exact distance costs O(span^2). Only ``<= bound`` is
    asked, so a distance cut off at the bound answers it: the same decision for every
    candidate (tested on random and real edits, and an attack's log with and without it)."""
    from textattack.constraints.overlap import levenshtein_edit_distance as module

    cls = module.LevenshteinEditDistance
    if getattr(cls._check_constraint, "trimmed", False):
        return

    def _check_constraint(self, transformed_text, reference_text) -> bool:
        bound = self.max_edit_distance
        dist = bounded_edit_distance(reference_text.text, transformed_text.text, bound)
        return dist <= bound

    _check_constraint.trimmed = True
    _check_constraint.original = cls._check_constraint
    cls._check_constraint = _check_constraint
