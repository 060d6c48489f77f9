"""tools/mutants.py, the mutation run, without running it (``.ci/run`` does): its mutants still
match the code, a mutant whose text moved stops the run naming it, and its two import checks
refuse a tree that is not the mutated copy."""
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("mutants_tool", ROOT / "tools" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


def test_every_mutant_still_matches_the_code_exactly_once():
    """Code moves: when this fails, update the named mutant's old text in tools/mutants.py."""
    assert tool.check_mutants(tool.MUTANTS) == []


def test_the_issue_nine_and_at_least_fifteen_more_across_the_library():
    names = {m.name for m in tool.MUTANTS}
    nine = {"input-feeding-off", "tf-ratio-not-passed", "tf-generator-not-restored",
            "eval-loss-per-sentence", "lstm-hx-ignored-with-lengths", "length-penalty-half-alpha",
            "kneser-ney-bos-continuation", "kneser-ney-auto-discount", "gradcheck-ones-cotangent"}
    assert nine <= names and len(names - nine) >= 15 and len(names) == len(tool.MUTANTS)
    files = {m.file for m in tool.MUTANTS if m.name not in nine}
    for area in ("grad/", "minis2s/models/", "minis2s/search.py", "minis2s/metrics.py",
                 "minis2s/lm/", "minis2s/train", "minis2s/checkpoint.py"):
        assert any(f.startswith(area) for f in files), area
    for m in tool.MUTANTS:
        assert m.old != m.new and m.tests and all(t.startswith("tests/test_") for t in m.tests)


def test_a_mutant_whose_text_moved_stops_the_run_before_anything_runs(monkeypatch, capsys):
    moved = tool.Mutant("moved-away", "minis2s/train.py", "text that is not there", "x",
                        ("tests/test_train.py",))
    twice = tool.Mutant("twice", "minis2s/train.py", "import", "x", ("tests/test_train.py",))
    problems = tool.check_mutants([moved, twice])
    assert problems[0].startswith("mutant moved-away: old text not found in minis2s/train.py")
    assert problems[1].startswith("mutant twice: old text found")
    monkeypatch.setattr(tool, "MUTANTS", [moved])
    monkeypatch.setattr(tool, "run_mutant", lambda *a: pytest.fail("nothing may run"))
    assert tool.main([]) == 2
    assert "mutant moved-away: old text not found" in capsys.readouterr().err


def test_the_diff_shows_the_edit():
    m = next(m for m in tool.MUTANTS if m.name == "eval-loss-per-sentence")
    text = tool.diff(m)
    assert ('-    stats = CorpusStats(nll_sum=sums["nll"], n_tokens=sums["tokens"],' in text
            and '+    stats = CorpusStats(nll_sum=sums["nll"], n_tokens=n,' in text)


def _env(tmp_path, file, digest):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), MUTANT_ROOT=str(ROOT),
               MUTANT_FILE=file, MUTANT_MODULE=tool.module_name(file), MUTANT_SHA256=digest)
    return env


def test_the_import_checks_refuse_a_module_that_is_not_the_mutated_file(tmp_path):
    """The smoke run and the pytest plugin both compare the imported module's file with the
    mutated one (path and SHA-256); here the file is the unmutated one."""
    file = "minis2s/search.py"
    wrong = hashlib.sha256(b"the mutated text").hexdigest()
    smoke = subprocess.run([sys.executable, "-c", tool.SMOKE], cwd=ROOT, env=_env(tmp_path, file, wrong),
                           capture_output=True, text=True, timeout=120)
    assert smoke.returncode == 1 and "is not the mutated file" in smoke.stderr
    (tmp_path / "_mutant_guard.py").write_text(tool.GUARD, encoding="utf-8")
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n", encoding="utf-8")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_mutant_guard",
            str(tmp_path / "test_nothing.py")]
    refused = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path, file, wrong), capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == tool.GUARD_FAILED, refused.stdout + refused.stderr
    right = hashlib.sha256((ROOT / file).read_bytes()).hexdigest()
    accepted = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path, file, right), capture_output=True,
                              text=True, timeout=120)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
