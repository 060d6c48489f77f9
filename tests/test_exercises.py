"""``minis2s exercise``: for every exercise the untouched starter fails its check, the shipped
plausible wrong solution fails it naming the first wrong coordinate, and a solution built from
the library's own function passes; the command's refusals; the comparison helpers."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minis2s.exercises import exercises, get
from minis2s.exercises.checking import (CheckFailed, StudentFileError, expect_close,
                                        first_difference, load_student)
from minis2s.exercises.runner import check_file

REPO = Path(__file__).resolve().parents[1]
ALL = sorted(exercises())


def _write(tmp_path, number, kind):
    ex = get(number)
    path = tmp_path / kind / ex.file_name
    path.parent.mkdir(exist_ok=True)
    path.write_text(ex.text(kind), encoding="utf-8")
    return path


def test_at_least_15_exercises_numbered_from_1_each_with_its_three_files():
    assert len(ALL) >= 15 and ALL == list(range(1, len(ALL) + 1))
    for number in ALL:
        ex = get(number)
        starter = ex.text("starters")
        assert f"minis2s exercise check {number}\n" in starter
        for name in ex.functions:
            assert f"def {name}(" in starter, (number, name)
            assert f"def {name}(" in ex.text("wrong"), (number, name)
            assert f"def {name}(" in ex.text("solutions"), (number, name)


@pytest.mark.parametrize("number", ALL)
def test_the_untouched_starter_fails(tmp_path, number):
    ok, lines, failure = check_file(number, _write(tmp_path, number, "starters"))
    assert not ok
    assert "is not written yet" in failure.what and failure.what.split()[0] in get(number).functions
    assert lines[0].endswith("FAILED")


@pytest.mark.parametrize("number", ALL)
def test_the_plausible_wrong_solution_fails_at_a_named_coordinate(tmp_path, number):
    ok, lines, failure = check_file(number, _write(tmp_path, number, "wrong"))
    assert not ok, f"exercise {number}: the checker missed the mistake '{get(number).mistake}'"
    assert "raised" not in failure.what and "not written" not in failure.what, failure.what
    assert failure.where, failure.what                               # the first bad coordinate
    assert failure.expected is not None and failure.got is not None
    assert failure.expected != failure.got
    text = "\n".join(lines)
    assert f"first wrong coordinate: {failure.where}" in text and "expected " in text
    assert "hint: " in text


@pytest.mark.parametrize("number", ALL)
def test_a_solution_built_from_the_librarys_own_function_passes(tmp_path, number):
    ok, lines, failure = check_file(number, _write(tmp_path, number, "solutions"))
    assert ok, "\n".join(lines)
    assert lines[0].endswith("all checks passed") and len(lines) >= 2


# ----------------------------------------------------------------------------- the helpers
def test_first_difference_is_the_first_in_row_major_order_and_sees_nan_and_inf():
    expected = np.zeros((3, 4))
    got = expected.copy()
    got[2, 0], got[1, 3] = 5.0, 1e-3
    assert first_difference(got, expected) == (1, 3)
    assert first_difference(expected, expected) is None
    assert first_difference([np.nan, 1.0], [np.nan, 1.0]) is None
    assert first_difference([0.0, np.nan], [0.0, 1.0]) == (1,)
    assert first_difference([np.inf], [-np.inf]) == (0,)
    assert first_difference([1.0 + 1e-9], [1.0]) is None                 # within the tolerance


def test_expect_close_reports_a_wrong_shape_and_the_coordinate_with_both_values():
    with pytest.raises(CheckFailed) as err:
        expect_close("f", np.zeros((2, 3)), np.zeros((3, 2)), "transpose?")
    assert err.value.expected == "shape (3, 2)" and err.value.got == "shape (2, 3)"
    with pytest.raises(CheckFailed) as err:
        expect_close("f", [[1.0, 2.0], [3.0, 9.0]], [[1.0, 2.0], [3.0, 4.0]], "h")
    assert err.value.where == "[1, 1] of shape (2, 2)"
    assert (err.value.expected, err.value.got) == (4.0, 9.0)


def test_a_student_file_that_raises_on_import_names_the_file_and_line(tmp_path):
    bad = tmp_path / "exercise_01.py"
    bad.write_text("import numpy as np\n\nx = 1 / 0\n")
    with pytest.raises(StudentFileError, match=r"exercise_01.py:3: cannot import it: ZeroDivisionError"):
        load_student(bad)
    with pytest.raises(StudentFileError, match="not found"):
        load_student(tmp_path / "missing.py")


def test_an_exception_inside_the_students_function_is_a_failed_check_naming_its_line(tmp_path):
    path = tmp_path / "exercise_06.py"
    path.write_text("import numpy as np\n\ndef softmax(x):\n    return x @ np.ones((2, 2))\n\n"
                    "def softmax_backward(y, g):\n    return g\n")
    ok, lines, failure = check_file(6, path)
    assert not ok and "softmax raised ValueError" in failure.what and "exercise_06.py:4" in failure.what


# ----------------------------------------------------------------------------- the command
def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_show_writes_the_starter_and_refuses_to_overwrite_without_force(tmp_path):
    from minis2s.cli import main
    assert main(["exercise", "show", "6", "--dir", str(tmp_path)]) == 0
    written = tmp_path / "exercise_06.py"
    assert written.read_text(encoding="utf-8") == get(6).text("starters")
    written.write_text("# my work\n")
    assert main(["exercise", "show", "6", "--dir", str(tmp_path)]) == 2
    assert written.read_text() == "# my work\n"                          # nothing lost
    assert main(["exercise", "show", "6", "--dir", str(tmp_path), "--force"]) == 0
    assert written.read_text(encoding="utf-8") == get(6).text("starters")


def test_check_exit_codes_and_one_line_for_a_missing_or_broken_file(tmp_path, capsys):
    from minis2s.cli import main
    assert main(["exercise", "check", "12", "--file", str(tmp_path / "exercise_12.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err and "minis2s exercise show 12" in err
    broken = tmp_path / "exercise_12.py"
    broken.write_text("def attention(query, memory, pad_mask)\n    pass\n")
    assert main(["exercise", "check", "12", "--file", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exercise_12.py:1: cannot import it: SyntaxError" in err
    broken.write_text(get(12).text("wrong"))
    assert main(["exercise", "check", "12", "--file", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "first wrong coordinate: [1, 0] of shape (2, 4)" in out
    broken.write_text(get(12).text("solutions"))
    assert main(["exercise", "check", "12", "--file", str(broken)]) == 0
    assert main(["exercise", "check", "99"]) == 2


def test_python_dash_m_minis2s_exercises_lists_shows_and_checks_in_the_current_directory(tmp_path):
    r = _run(["minis2s.exercises", "list"], tmp_path)
    assert r.returncode == 0 and len([l for l in r.stdout.splitlines() if l[:3].strip().isdigit()]) == len(ALL)
    r = _run(["minis2s.exercises", "show", "18"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "exercise_18.py").is_file()
    r = _run(["minis2s", "exercise", "check", "18"], tmp_path)
    assert r.returncode == 1 and "length_penalty is not written yet" in r.stdout
