"""Tests for minis2s.data.parallel: TSV and two-file readers, errors naming file and line."""
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minis2s.data.parallel import (DataError, ParallelData, filter_by_length, read_parallel,
                                   read_tsv)


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def error_of(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return e.value


# ----------------------------------------------------------------------------- DataError
def test_data_error_format():
    e = DataError("a.tsv", 7, "no tab")
    assert str(e) == "a.tsv:7: no tab" and e.path == "a.tsv" and e.line == 7
    e = DataError("a.tsv", None, "file not found")
    assert str(e) == "a.tsv: file not found" and e.line is None
    assert isinstance(e, ValueError)


# ----------------------------------------------------------------------------- read_tsv
def test_reads_pairs_and_strips_sides(tmp_path):
    p = write(tmp_path / "d.tsv", "a b\tx\n 2026년 \t y z \n")
    data = read_tsv(p)
    assert isinstance(data, ParallelData)
    assert data.pairs == [("a b", "x"), ("2026년", "y z")]
    assert data.skipped == 0 and data.path == str(p) and len(data) == 2


def test_no_final_newline_and_trailing_blank_lines(tmp_path):
    assert read_tsv(write(tmp_path / "a.tsv", "a\tb")).pairs == [("a", "b")]
    assert read_tsv(write(tmp_path / "b.tsv", "a\tb\n\n\n  \n")).pairs == [("a", "b")]


def test_crlf_line_endings(tmp_path):
    data = read_tsv(write(tmp_path / "d.tsv", b"a\tb\r\nc\td\r\n"))
    assert data.pairs == [("a", "b"), ("c", "d")]


def test_utf8_bom_is_tolerated(tmp_path):
    data = read_tsv(write(tmp_path / "d.tsv", b"\xef\xbb\xbfa\tb\nc\td\n"))
    assert data.pairs == [("a", "b"), ("c", "d")]


def test_one_megabyte_line(tmp_path):
    long = "x" * (1 << 20)
    data = read_tsv(write(tmp_path / "d.tsv", f"a\tb\n{long}\t{long[:10]}\n"))
    assert data.pairs[1] == (long, "x" * 10)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.tsv"
    e = error_of(read_tsv, p)
    assert e.path == str(p) and e.line is None and "not found" in str(e)
    assert str(e).startswith(f"{p}: ")
    e = error_of(read_tsv, tmp_path)
    assert "directory" in str(e)


def test_empty_file(tmp_path):
    for name, content in [("e.tsv", b""), ("blank.tsv", b"\n\n \r\n")]:
        p = write(tmp_path / name, content)
        e = error_of(read_tsv, p)
        assert e.path == str(p) and e.line is None and "empty" in str(e)
        e = error_of(read_tsv, p, skip_bad_lines=True)        # still an error
        assert "empty" in str(e)


def test_non_utf8_reports_its_line(tmp_path):
    p = write(tmp_path / "d.tsv", b"a\tb\nc\td\ne\xff\xfe\tf\ng\th\n")
    e = error_of(read_tsv, p)
    assert e.line == 3 and str(e).startswith(f"{p}:3: ") and "UTF-8" in str(e)
    assert "0xff" in str(e)


def test_utf16_file_is_explained(tmp_path):
    p = write(tmp_path / "d.tsv", "a\tb\n".encode("utf-16"))
    assert "UTF-16" in str(error_of(read_tsv, p))


@pytest.mark.parametrize("content, line, reason", [
    ("a\tb\nno tab here\nc\td\n", 2, "no tab"),
    ("a\tb\nc\td\nx\ty\tz\n", 3, "found 2"),
    ("\tb\n", 1, "empty source"),
    ("a\tb\nc\t  \n", 2, "empty target"),
    ("a\tb\n\nc\td\n", 2, "empty line"),
])
def test_malformed_lines_name_file_and_line(tmp_path, content, line, reason):
    p = write(tmp_path / "d.tsv", content)
    e = error_of(read_tsv, p)
    assert e.path == str(p) and e.line == line and reason in str(e)
    assert str(e).startswith(f"{p}:{line}: ")


def test_skip_bad_lines_counts(tmp_path):
    p = write(tmp_path / "d.tsv", b"a\tb\nno tab\nx\ty\tz\n\tq\nc\td\n\xff\tz\n\ne\tf\n")
    data = read_tsv(p, skip_bad_lines=True)
    assert data.pairs == [("a", "b"), ("c", "d"), ("e", "f")]
    assert data.skipped == 5 and data.skipped_lines == [2, 3, 4, 6, 7]


def test_skip_bad_lines_with_nothing_left_raises(tmp_path):
    p = write(tmp_path / "d.tsv", "only\nbad lines\n")
    e = error_of(read_tsv, p, skip_bad_lines=True)
    assert e.line is None and "no valid" in str(e) and "2" in str(e)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.binary(max_size=60),
                 st.text(alphabet=st.sampled_from("ab \t\r\n\u00e9\ufeff"), max_size=40)
                 .map(lambda s: s.encode("utf-8"))),
       st.booleans())
def test_random_bytes_load_or_raise_data_error(content, skip):
    fd, name = tempfile.mkstemp(suffix=".tsv")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        try:
            data = read_tsv(name, skip_bad_lines=skip)
        except DataError as e:
            assert e.path == name
            assert e.line is None or e.line >= 1
        else:
            assert data.pairs
            for src, tgt in data.pairs:
                assert src and tgt and "\t" not in src + tgt and "\n" not in src + tgt
    finally:
        os.unlink(name)


# ----------------------------------------------------------------------------- read_parallel
def test_read_parallel(tmp_path):
    s = write(tmp_path / "s.txt", b"\xef\xbb\xbfone\r\ntwo\r\n")
    t = write(tmp_path / "t.txt", "하나\n둘\n\n")
    data = read_parallel(s, t)
    assert data.pairs == [("one", "하나"), ("two", "둘")]
    assert data.path == (str(s), str(t))


def test_read_parallel_unequal_counts(tmp_path):
    s = write(tmp_path / "s.txt", "a\nb\nc\n")
    t = write(tmp_path / "t.txt", "x\ny\n")
    e = error_of(read_parallel, s, t)
    msg = str(e)
    assert str(s) in msg and str(t) in msg and "3" in msg and "2" in msg
    error_of(read_parallel, s, t, skip_bad_lines=True)     # not a per-line problem


def test_read_parallel_empty_line_and_bad_bytes(tmp_path):
    s = write(tmp_path / "s.txt", "a\nb\nc\nd\n")
    t = write(tmp_path / "t.txt", b"x\n  \nz\n\xc3(\n")
    e = error_of(read_parallel, s, t)
    assert e.path == str(t) and e.line == 2 and "empty target" in str(e)
    data = read_parallel(s, t, skip_bad_lines=True)
    assert data.pairs == [("a", "x"), ("c", "z")] and data.skipped == 2
    s2 = write(tmp_path / "s2.txt", "a\n\nc\nd\n")
    e = error_of(read_parallel, s2, t)
    assert e.path == str(s2) and e.line == 2 and "empty source" in str(e)
    t2 = write(tmp_path / "t2.txt", b"x\ny\nz\n\xc3(\n")
    e = error_of(read_parallel, s, t2)
    assert e.path == str(t2) and e.line == 4 and "UTF-8" in str(e)


def test_read_parallel_missing_files(tmp_path):
    s = write(tmp_path / "s.txt", "a\n")
    e = error_of(read_parallel, s, tmp_path / "missing.txt")
    assert e.path == str(tmp_path / "missing.txt")
    e = error_of(read_parallel, write(tmp_path / "empty.txt", ""), s)
    assert "empty" in str(e)


# ----------------------------------------------------------------------------- filtering
def test_filter_by_length():
    pairs = [(["a"] * 3, ["b"] * 3), (["a"] * 5, ["b"]), (["a"], ["b"] * 6), (["a"] * 4, ["b"] * 4)]
    kept, dropped = filter_by_length(pairs, 4)
    assert kept == [pairs[0], pairs[3]] and dropped == 2
    assert filter_by_length([], 4) == ([], 0)
