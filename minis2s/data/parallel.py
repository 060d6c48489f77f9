"""Reading parallel text: sentence pairs from a TSV file or from two line-aligned files.

Formats
-------
* ``read_tsv(path)``: one pair per line, ``source<TAB>target``.
* ``read_parallel(src_path, tgt_path)``: line ``i`` of one file translates line ``i`` of the
  other.

Both readers are strict by default and tolerant of harmless variations:

* UTF-8, with a byte-order mark at the start of the file tolerated ("utf-8-sig");
* Unix ``\\n`` or Windows ``\\r\\n`` line endings; a final newline or not;
* blank lines at the end of the file are ignored; each side is stripped of surrounding
  whitespace.

Anything else is a ``DataError`` that names the file and the 1-based line: a missing or empty
file, bytes that are not UTF-8, a line without a tab or with more than one tab, an empty source
or target, or two files with different line counts.  With ``skip_bad_lines=True`` malformed
lines are skipped and counted instead (a missing or empty file, or one with no usable pair,
still raises).  Files are read as bytes and decoded line by line so that a bad byte is reported
at its own line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

_BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """A problem with a data file.  ``path`` names the file, ``line`` is the 1-based line
    number (or None when the problem is not on one line), ``reason`` says what is wrong.
    ``str(err)`` reads ``"{path}:{line}: {reason}"`` or ``"{path}: {reason}"``."""

    def __init__(self, path, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")


@dataclass
class ParallelData:
    """Sentence pairs read from disk.

    ``pairs``: list of (source, target) strings; ``skipped``: number of malformed lines skipped
    (only with ``skip_bad_lines=True``); ``path``: the file read (for ``read_parallel`` the
    tuple ``(src_path, tgt_path)``); ``skipped_lines``: the 1-based numbers of skipped lines.
    """

    pairs: list[tuple[str, str]]
    skipped: int
    path: str | tuple[str, str]
    skipped_lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)


# --------------------------------------------------------------------------- low-level lines
def _read_bytes(path) -> bytes:
    """A file's bytes with a UTF-8 byte-order mark removed. Raises DataError for a missing,
    unreadable or UTF-16 file."""
    p = Path(path)
    if not p.exists():
        raise DataError(path, None, "file not found")
    if p.is_dir():
        raise DataError(path, None, "is a directory, expected a text file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DataError(path, None, f"cannot read file ({e.strerror or e})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(path, None, "file looks UTF-16 encoded (UTF-16 byte-order mark); "
                                    "save it as UTF-8")
    return data[len(_BOM):] if data.startswith(_BOM) else data


def _split_lines(data: bytes) -> list[bytes]:
    """Lines without their ``\\n`` / ``\\r\\n``."""
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in data.split(b"\n")]


def _read_lines(path) -> list[bytes]:
    """The raw lines of a file (without ``\\n`` / ``\\r\\n``, BOM removed, blank lines at the
    end dropped).  Raises DataError for a missing, unreadable or empty file."""
    lines = _split_lines(_read_bytes(path))
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(path, None, "file is empty (no sentence pairs)")
    return lines


def read_text_lines(path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark tolerated, ``\\n`` or ``\\r\\n``), each
    decoded on its own so that a bad byte is a DataError naming the file and its 1-based line.
    Blank lines are kept (the caller decides); an empty file gives ``[]``."""
    data = _read_bytes(path)
    if data.endswith(b"\n"):                     # the final newline ends the last line
        data = data[:-1]
    return [_decode(raw, path, i) for i, raw in enumerate(_split_lines(data), 1)] if data else []


def iter_text_lines(stream, name: str = "<stdin>"):
    """The lines of a binary stream (standard input), decoded one at a time as they arrive, by
    the rules ``read_text_lines`` applies to a file: a UTF-8 byte-order mark at the start is
    dropped, a UTF-16 one refused, ``\\n`` or ``\\r\\n`` ends a line, and a bad byte is a
    DataError naming ``name`` and the 1-based line."""
    for lineno, raw in enumerate(stream, 1):
        if lineno == 1:
            if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise DataError(name, None, "input looks UTF-16 encoded (UTF-16 byte-order mark); "
                                            "give UTF-8 text")
            if raw.startswith(_BOM):
                raw = raw[len(_BOM):]
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield _decode(raw, name, lineno)


def _decode(raw: bytes, path, lineno: int) -> str:
    """Decode one line as UTF-8, or raise a DataError pointing at the bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start:e.start + 1]
        raise DataError(path, lineno, f"not valid UTF-8 (byte 0x{bad.hex()} at byte offset "
                                      f"{e.start} of the line: {e.reason})") from None


# --------------------------------------------------------------------------- readers
def _parse_tsv_line(raw: bytes, path, lineno: int) -> tuple[str, str]:
    text = _decode(raw, path, lineno)
    n_tabs = text.count("\t")
    if not text.strip():
        raise DataError(path, lineno, "empty line (expected source<TAB>target)")
    if n_tabs == 0:
        raise DataError(path, lineno, "no tab between source and target "
                                      "(expected source<TAB>target)")
    if n_tabs > 1:
        raise DataError(path, lineno, f"expected exactly one tab between source and target, "
                                      f"found {n_tabs}")
    src, tgt = (s.strip() for s in text.split("\t"))
    if not src:
        raise DataError(path, lineno, "empty source side")
    if not tgt:
        raise DataError(path, lineno, "empty target side")
    return src, tgt


def read_tsv(path, skip_bad_lines: bool = False) -> ParallelData:
    """Read ``source<TAB>target`` lines from ``path`` (see the module docstring for the rules).

    Returns a ``ParallelData``; raises ``DataError`` naming the file and line on bad input.
    """
    lines = _read_lines(path)
    pairs: list[tuple[str, str]] = []
    skipped: list[int] = []
    for lineno, raw in enumerate(lines, start=1):
        try:
            pairs.append(_parse_tsv_line(raw, path, lineno))
        except DataError:
            if not skip_bad_lines:
                raise
            skipped.append(lineno)
    if not pairs:
        raise DataError(path, None, f"no valid sentence pairs ({len(skipped)} malformed "
                                    f"lines skipped)")
    return ParallelData(pairs, len(skipped), str(path), skipped)


def read_parallel(src_path, tgt_path, skip_bad_lines: bool = False) -> ParallelData:
    """Read two line-aligned files: line ``i`` of ``src_path`` pairs with line ``i`` of
    ``tgt_path``.  Different line counts raise a DataError naming both files and counts; an
    empty or undecodable line on either side is an error at that line (or skipped and counted
    with ``skip_bad_lines=True``)."""
    src_lines = _read_lines(src_path)
    tgt_lines = _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(src_path, None,
                        f"has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
                        f"source and target files must be line-aligned")
    pairs: list[tuple[str, str]] = []
    skipped: list[int] = []
    for lineno, (raw_s, raw_t) in enumerate(zip(src_lines, tgt_lines), start=1):
        try:
            src = _decode(raw_s, src_path, lineno).strip()
            tgt = _decode(raw_t, tgt_path, lineno).strip()
            if not src:
                raise DataError(src_path, lineno, "empty source line")
            if not tgt:
                raise DataError(tgt_path, lineno, "empty target line")
            pairs.append((src, tgt))
        except DataError:
            if not skip_bad_lines:
                raise
            skipped.append(lineno)
    if not pairs:
        raise DataError(src_path, None, f"no valid sentence pairs with {tgt_path} "
                                        f"({len(skipped)} malformed lines skipped)")
    return ParallelData(pairs, len(skipped), (str(src_path), str(tgt_path)), skipped)


# --------------------------------------------------------------------------- helpers
def filter_by_length(pairs_tokens: Sequence[tuple[Sequence, Sequence]], max_length: int):
    """Keep the (src_tokens, tgt_tokens) pairs whose both sides have at most ``max_length``
    tokens.  Returns ``(kept, n_dropped)`` with ``kept`` a list in the original order."""
    kept = [(s, t) for s, t in pairs_tokens if len(s) <= max_length and len(t) <= max_length]
    return kept, len(pairs_tokens) - len(kept)
