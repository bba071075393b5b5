"""Where a job's per-example attack log lives, and how it is read and compressed.

While an attack runs its log is plain JSON lines (``<run_id>.attack.partial.jsonl``), flushed
line by line, so a killed attack resumes from it. When the job ends ``ok`` the log is
compressed with gzip into ``<run_id>.attack.jsonl.gz`` (:func:`finish_log`) and renamed into
place together with the record. Logs written before schema 3 are plain
``<run_id>.attack.jsonl``; every reader takes both names (:func:`find_log`, :func:`read_rows`).

The gzip stream is written with no file name and a zero timestamp, so the same rows always give
the same bytes (a re-migration or a rerun does not change a committed file for nothing).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

LOG_SUFFIX = ".attack.jsonl.gz"
PLAIN_SUFFIX = ".attack.jsonl"
PARTIAL_SUFFIX = ".attack.partial.jsonl"


def log_path(folder: Path, run_id: str) -> Path:
    """The compressed log of a finished job (beside its record)."""
    return Path(folder) / f"{run_id}{LOG_SUFFIX}"


def find_log(folder: Path, run_id: str) -> Path | None:
    """The log of ``run_id`` under ``folder``: the compressed one, else a plain one of an older
    schema, else None."""
    for suffix in (LOG_SUFFIX, PLAIN_SUFFIX):
        path = Path(folder) / f"{run_id}{suffix}"
        if path.is_file():
            return path
    return None


def resolve(path: str | Path) -> Path:
    """A log path as a user or an old record names it: ``X.attack.jsonl`` that no longer
    exists resolves to ``X.attack.jsonl.gz`` (and the other way round)."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.name
    if name.endswith(PLAIN_SUFFIX):
        alt = p.with_name(name + ".gz")
    elif name.endswith(LOG_SUFFIX):
        alt = p.with_name(name.removesuffix(".gz"))
    else:
        return p
    return alt if alt.is_file() else p


def run_id_of_log(path: str | Path) -> str | None:
    """The run id a log's file name carries (``<run_id>.attack.jsonl[.gz]``)."""
    name = Path(path).name
    for suffix in (LOG_SUFFIX, PLAIN_SUFFIX, PARTIAL_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def read_text(path: str | Path) -> str:
    """The log's text (gzip is recognised by its magic bytes, not by the name)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def log_lines(text: str) -> list[str]:
    """The complete lines of a log's text: split at ``\n`` only (``str.splitlines`` also
    splits at characters such as U+0085 that a JSON line holds unescaped in a text field, as
    IMDB reviews do); a last line without its newline (cut off by a kill) is left out."""
    return text.split("\n")[:-1]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of a log (a line cut off by a kill, or an unparsable one, ends it)."""
    rows = []
    for line in log_lines(read_text(path)):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def content_sha256(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a log's uncompressed text: the same for its plain and its
    compressed form, so a transfer source keeps its identity when its log is compressed."""
    return hashlib.sha256(read_text(path).encode("utf-8")).hexdigest()[:16]


def gzip_bytes(text: bytes) -> bytes:
    """Deterministic gzip of ``text`` (no name, mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text)
    return buf.getvalue()


def write_compressed(source: Path, target: Path) -> None:
    """Compress ``source`` (a plain log) into ``target`` atomically (temp file + rename)."""
    from benchmark.records.store import write_bytes_atomic

    write_bytes_atomic(target, gzip_bytes(Path(source).read_bytes()))


def finish_log(partial: Path, folder: Path, run_id: str) -> Path:
    """Compress a finished job's partial log into place; remove the partial log and any plain
    log of an older schema under the same id. Returns the compressed log's path."""
    target = log_path(folder, run_id)
    write_compressed(partial, target)
    partial.unlink(missing_ok=True)
    (Path(folder) / f"{run_id}{PLAIN_SUFFIX}").unlink(missing_ok=True)
    return target


def remove_logs(folder: Path, run_id: str) -> None:
    """Remove a job's finished log in either form (a rerun without attack)."""
    for suffix in (LOG_SUFFIX, PLAIN_SUFFIX):
        (Path(folder) / f"{run_id}{suffix}").unlink(missing_ok=True)
