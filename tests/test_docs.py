"""Every ``python`` and ``console`` block of README.md and docs/**/*.md runs and prints what the
docs say it prints (conventions: the docstring of tests/docs_runner.py); then tests of the runner
itself on small markdown strings, failures included (the tester is tested)."""
import textwrap

import pytest

import docs_runner as dr

FILES = dr.markdown_files()
BLOCKS = [(path, i, block) for path in FILES for i, block in enumerate(dr.runnable_blocks(path))]
_SESSIONS = {}


def _params():
    if not FILES:
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason="no README.md or docs/**/*.md in the repository yet"), id="no-docs")]
    if not BLOCKS:
        return [pytest.param(None, None, id="no-blocks")]
    return [pytest.param(path, i, id=block.id) for path, i, block in BLOCKS]


@pytest.mark.parametrize("path, index", _params())
def test_doc_block(path, index):
    if path is None:                   # markdown files without any runnable block
        assert FILES, "the runner found no markdown files"
        return
    if path not in _SESSIONS:          # blocks of one file share a session, run in order
        _SESSIONS[path] = dr.DocSession(dr.runnable_blocks(path))
    result = _SESSIONS[path].result(index)
    if not result.ok:
        pytest.fail(result.message, pytrace=False)


# ----------------------------------------------------------------------------- the runner itself
def md(text):
    return textwrap.dedent(text).lstrip("\n")


def outcomes(text):
    return [(block.lang, result.ok) for block, result in dr.run_text(md(text))]


def test_parse_blocks_lines_languages_markers_and_output_attachment():
    blocks = dr.parse_markdown(md("""
        # Title

        ```python
        print(1)
        ```

        ```output
        1
        ```

        <!-- not-run: slow -->

        ~~~console
        $ minis2s train
        ~~~

        ````text
        ```python
        not a block
        ```
        ````

          ```python
          x = 1
          ```
        """), "doc.md")
    assert [(b.line, b.lang, b.not_run) for b in blocks] == [
        (3, "python", False), (7, "output", False), (13, "console", True), (17, "text", False),
        (23, "python", False)]
    assert blocks[0].expected == "1\n" and blocks[0].id == "doc.md:3"
    assert blocks[4].code == "x = 1\n" and blocks[4].expected is None


def test_python_blocks_share_a_namespace_and_matching_output_passes():
    assert outcomes("""
        ```python
        x = 21
        ```

        ```python
        print(x * 2)
        print("  ")
        ```

        ```output
        42
        ```
        """) == [("python", True), ("python", True)]


def test_an_output_mismatch_is_reported_with_a_diff():
    [(block, result)] = dr.run_text(md("""
        ```python
        print("hello")
        ```
        ```output
        goodbye
        ```
        """), "doc.md")
    assert not result.ok
    assert "doc.md:1" in result.message and "-goodbye" in result.message and "+hello" in result.message


def test_an_output_block_after_text_is_not_compared():
    assert outcomes("""
        ```python
        print("hello")
        ```
        Some text.
        ```output
        goodbye
        ```
        """) == [("python", True)]


def test_a_raising_block_fails_with_the_markdown_line_in_the_traceback():
    [(block, result)] = dr.run_text(md("""
        Text.

        ```python
        x = 1
        raise ValueError("bad example")
        ```
        """), "doc.md")
    assert not result.ok and "bad example" in result.message and 'doc.md", line 5' in result.message


@pytest.mark.parametrize("expected, ok", [
    ("a\n...\nd\n", True), ("...\n", True), ("a\nb\n...\nc\nd\n", True), ("a\n...\nb\n...\nd\n", True),
    ("a\n...\nx\n", False), ("a\nb\n", False), ("a\nb\nc\nd\ne\n", False)])
def test_the_dots_line_wildcard(expected, ok):
    assert dr.output_matches(expected, "a\nb\nc\nd\n") is ok


@pytest.mark.parametrize("expected, ok", [
    ("epoch 1 ([...]s)", True), ("[...]", True), ("epoch [...] ([...]s)", True),
    ("epoch 2 ([...]s)", False), ("epoch 1 [...]x", False)])
def test_the_bracket_dots_wildcard_within_a_line(expected, ok):
    assert dr.output_matches(expected, "epoch 1 (7.31s)\n") is ok


def test_trailing_whitespace_and_blank_lines_are_ignored_but_inner_blank_lines_are_not():
    assert dr.output_matches("a\n\nb\n\n\n", "a   \n\nb")
    assert not dr.output_matches("a\nb\n", "a\n\nb\n")


def test_wildcards_in_python_output_blocks():
    assert outcomes("""
        ```python
        import time
        print("start")
        print(f"took {time.perf_counter()}s")
        print("end")
        ```

        ```output
        ...
        took [...]s
        end
        ```
        """) == [("python", True)]


def test_console_commands_run_in_one_temporary_directory_with_python_on_path():
    assert outcomes("""
        ```python
        open("made.txt", "w").write("from python\\n")
        ```

        ```console
        $ cat made.txt
        from python
        $ python -c "import sys, minis2s; print(sys.version_info >= (3, 10))"
        True
        $ echo one \\
            two
        one two
        $ echo unchecked
        ```
        """) == [("python", True), ("console", True)]


def test_console_exit_codes_and_output_mismatches_are_failures():
    results = dr.run_text(md("""
        ```console
        $ echo fine
        $ bash -c 'exit 3'
        ```

        ```console
        $ echo actual
        expected
        ```
        """), "doc.md")
    (_, exit_code), (_, mismatch) = results
    assert not exit_code.ok and "exited with code 3" in exit_code.message
    assert not mismatch.ok and "-expected" in mismatch.message and "+actual" in mismatch.message


def test_a_malformed_console_block_fails():
    assert outcomes("""
        ```console
        minis2s train
        ```
        """) == [("console", False)]


def test_not_run_blocks_are_not_run_but_checked():
    assert outcomes("""
        <!-- not-run -->
        ```python
        raise SystemExit("never runs")
        ```

        <!-- not-run -->

        ```console
        $ false
        $ pip install ".[test]" && python -m pytest -n 2
        $ git status && bash .ci/run
        $ printf 'x\\n' > in.txt
        $ python benchmarks/lstm_cell.py
        ```

        <!-- not-run -->
        ```python
        def broken(:
        ```
        """) == [("python", True), ("console", False), ("python", False)]
    [(_, res)] = dr.run_text(md("""
        <!-- not-run -->
        ```console
        $ pip install ".[test]" && python -m pytest -n 2
        $ git status && bash .ci/run
        $ printf 'x\\n' > in.txt
        ```
        """))
    assert res.ok, res.message


def test_not_run_minis2s_commands_are_checked_against_their_help():
    [(_, good)] = dr.run_text(md("""
        <!-- not-run -->
        ```console
        $ minis2s train --epochs 3 --hidden-size 64
        $ python -m minis2s translate --model runs/dates --input x.txt
        ```
        """))
    assert good.ok, good.message
    [(_, bad)] = dr.run_text(md("""
        <!-- not-run -->
        ```console
        $ minis2s train --epochs 3 --no-such-flag 1
        $ minis2s no-such-command
        $ frobnicate --all
        $ python no/such/script.py
        ```
        """))
    assert not bad.ok
    for text in ("--no-such-flag", "no-such-command", "frobnicate", "no/such/script.py"):
        assert text in bad.message
    assert "option(s) --no-such-flag not in its --help" in bad.message  # --epochs exists


def test_not_run_commands_under_an_mpi_launcher_are_checked_as_the_launched_command():
    [(_, good)] = dr.run_text(md("""
        <!-- not-run -->
        ```console
        $ mpiexec -n 2 minis2s train --task dates --check-every 50
        $ mpiexec -n 4 -hosts a,b minis2s lm train --builtin markov
        $ srun --ntasks=4 -N 2 python -m minis2s train --task dates
        ```
        """))
    assert good.ok, good.message
    [(_, bad)] = dr.run_text(md("""
        <!-- not-run -->
        ```console
        $ mpiexec -n 2 minis2s train --no-such-flag 1
        $ srun -n 2 frobnicate
        ```
        """))
    assert not bad.ok
    assert "--no-such-flag" in bad.message and "frobnicate" in bad.message


def test_other_languages_are_not_run():
    assert outcomes("""
        ```bash
        exit 1
        ```

        ```text
        whatever
        ```

        ```
        raise ValueError
        ```
        """) == []
