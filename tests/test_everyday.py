"""Everyday use (issue 16): decoding and BLEU stated on every report, defaults in --help,
resuming without --epochs, two-file evaluation, the tasks listing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--n-train", "600", "--n-valid", "40", "--n-test", "40", "--emb-size", "16",
         "--hidden-size", "32", "--batch-size", "32", "--lr", "0.01", "--quiet", "--threads", "1"]


def run(args, cwd, input=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minis2s", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small dates model that gets about half the test dates right (so that beam and greedy,
    BLEU and exact match are not all 0 or all 100)."""
    cwd = tmp_path_factory.mktemp("everyday")
    r = run(["train", "--task", "dates", "--epochs", "6", "--out", "model", *SMALL], cwd)
    assert r.returncode == 0, r.stderr
    r2 = run(["data", "--task", "dates", "--out", "data", "--n-train", "600", "--n-valid", "40",
              "--n-test", "40"], cwd)
    assert r2.returncode == 0, r2.stderr
    return cwd, r


def test_training_states_greedy_validation_and_the_bleu_label(model):
    cwd, r = model
    lines = r.stdout.splitlines()
    header = [line for line in lines if line.startswith("validation after each epoch decodes greedy")]
    assert len(header) == 1 and "BLEU (tokens: char" in header[0]
    assert "* marks a new best valid loss" in header[0]
    test_line = next(line for line in lines if line.startswith("test: "))
    assert test_line.endswith("(40 sentences, greedy)")
    assert sum(line.startswith("BLEU (tokens: char") for line in lines) == 1      # once per report
    for rec in map(json.loads, (cwd / "model" / "log.jsonl").read_text().splitlines()):
        assert rec["valid_decoding"] == "greedy"
        assert rec["valid_bleu_label"].startswith("BLEU (tokens: char")


def _translations(cwd, sources, extra=()):
    r = run(["translate", "--model", "model", *extra], cwd, input="".join(s + "\n" for s in sources))
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_evaluate_decodes_as_translate_does_and_says_so(model):
    cwd, _ = model
    pairs = [line.split("\t") for line in (cwd / "data" / "test.tsv").read_text().splitlines()]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    r = run(["evaluate", "--model", "model", "--data", "data/test.tsv", "--json"], cwd)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["decoding"] == "beam 5, alpha 0"
    hyps = _translations(cwd, sources)                         # translate's defaults: beam 5
    assert m["exact_match"] == pytest.approx(sum(h == t for h, t in zip(hyps, refs)) / len(refs))
    assert 0 < m["exact_match"] < 1
    # the label's claim, checked against sacreBLEU on the very translations (dates have no spaces)
    sacrebleu = pytest.importorskip("sacrebleu")
    assert "sacrebleu --tokenize char --smooth-method none" in m["bleu_label"]
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize="char", smooth_method="none").score
    assert m["bleu"] == pytest.approx(expected, abs=1e-9)

    r = run(["evaluate", "--model", "model", "--data", "data/test.tsv", "--beam-size", "1"], cwd)
    assert r.returncode == 0, r.stderr
    label, line = r.stdout.splitlines()
    assert label.startswith("BLEU (tokens: char, ") and line.endswith("(40 sentences, greedy)")
    greedy = _translations(cwd, sources, ["--beam-size", "1"])
    exact = 100 * sum(h == t for h, t in zip(greedy, refs)) / len(refs)
    assert line.startswith(f"exact match {exact:.2f}%")

    r = run(["evaluate", "--model", "model", "--data", "data/test.tsv", "--length-penalty", "0.6",
             "--json"], cwd)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["decoding"] == "beam 5, alpha 0.6"


def _all_parsers():
    import argparse
    sys.path.insert(0, str(REPO))
    from minis2s.cli import build_parser
    todo, seen = [("minis2s", build_parser())], []
    while todo:
        name, parser = todo.pop()
        seen.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {n}", p) for n, p in action.choices.items()]
    return seen


def test_every_help_entry_shows_its_default():
    import argparse
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
             argparse._VersionAction)
    parsers = _all_parsers()
    assert {"minis2s train", "minis2s evaluate", "minis2s lm generate"} <= {n for n, _ in parsers}
    missing = []
    for name, parser in parsers:
        for action in parser._actions:
            if not action.option_strings or isinstance(action, flags) or action.required:
                continue        # on/off flags are off by default; required options have none
            entry = parser._get_formatter()._format_action(action)
            if "default" not in entry:
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing
    # the rendered text, as a user sees it
    r = run(["train", "--help"], REPO)
    text = " ".join(r.stdout.split())                   # whatever the terminal width
    assert "--batch-size BATCH_SIZE (default: 64)" in text
    assert "'*' at the end of a line marks a new best validation score" in text
    r = run(["evaluate", "--help"], REPO)
    assert "(default: 5)" in r.stdout


TINY = ["--n-train", "100", "--n-valid", "20", "--n-test", "20", "--emb-size", "8",
        "--hidden-size", "8", "--batch-size", "50", "--quiet", "--threads", "1"]


def _epochs(cwd, run_dir):
    return [json.loads(line)["epoch"] for line in (cwd / run_dir / "log.jsonl").read_text().splitlines()]


def test_resume_without_epochs_keeps_the_runs_own_total(tmp_path):
    r = run(["train", "--task", "reverse", "--epochs", "2", "--out", "run", *TINY], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["train", "--resume", "run", "--quiet"], tmp_path)         # the total is 2: done
    assert r.returncode == 0, r.stderr
    assert "epoch  3" not in r.stdout and "test: exact match" in r.stdout
    assert _epochs(tmp_path, "run") == [1, 2]
    r = run(["train", "--resume", "run", "--epochs", "1", "--quiet"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("minis2s: error: --epochs 1 is below the epoch this run already "
                                "reached (2); give --epochs 2 or more")
    r = run(["train", "--resume", "run", "--epochs", "3", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert _epochs(tmp_path, "run") == [1, 2, 3]
    r = run(["train", "--resume", "run", "--quiet"], tmp_path)         # now the total is 3
    assert r.returncode == 0, r.stderr
    assert _epochs(tmp_path, "run") == [1, 2, 3]


def test_evaluate_takes_two_line_aligned_files_like_train(model):
    cwd, _ = model
    pairs = [line.split("\t") for line in (cwd / "data" / "test.tsv").read_text().splitlines()]
    (cwd / "test.src").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (cwd / "test.ref").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    tsv = run(["evaluate", "--model", "model", "--data", "data/test.tsv", "--beam-size", "1", "--json"], cwd)
    two = run(["evaluate", "--model", "model", "--src", "test.src", "--ref", "test.ref",
               "--beam-size", "1", "--json"], cwd)
    assert tsv.returncode == 0 and two.returncode == 0, two.stderr
    assert json.loads(two.stdout) == json.loads(tsv.stdout)
    (cwd / "short.ref").write_text("".join(t + "\n" for _, t in pairs[:-1]), encoding="utf-8")
    for args, message in [
            (["--data", "data/test.tsv", "--src", "test.src", "--ref", "test.ref"], "not both"),
            (["--src", "test.src"], "give --data FILE.tsv, or --src FILE and --ref FILE"),
            ([], "give --data FILE.tsv, or --src FILE and --ref FILE"),
            (["--src", "test.src", "--ref", "short.ref"], "short.ref")]:
        r = run(["evaluate", "--model", "model", *args], cwd)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_the_unknown_token_warning_names_the_first_unknown_tokens(model):
    cwd, _ = model
    r = run(["translate", "--model", "model", "--beam-size", "1"], cwd, input="1 Jan 2000€\nü 3 Feb 2001 €\n")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2
    assert ("minis2s: warning: 3 source token(s) not in the vocabulary were mapped to <unk>: '€', 'ü'"
            in r.stderr)
    many = "".join(chr(0x3041 + i) for i in range(7))            # 7 hiragana, none in dates
    r = run(["translate", "--model", "model", "--beam-size", "1"], cwd, input=many + "\n")
    assert "'ぁ', 'あ', 'ぃ', 'い', 'ぅ' (the first 5 of 7 shown)" in r.stderr


def test_tasks_shows_each_tasks_symbols_and_sizes(tmp_path):
    sys.path.insert(0, str(REPO))
    from minis2s.data.tasks import TASKS, make_task
    r = run(["tasks"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    splits = make_task("addition")
    src = sorted({c for split in splits.values() for s, _ in split for c in s})
    assert src == list("+0123456789")
    assert "source: char, 11 symbols: +0123456789" in out
    assert "target: char, 10 symbols: 0123456789" in out
    assert "splits: train 10000, valid 500, test 500, test-long 500" in out
    assert "source: space, 20 words: a b c d e f g h i j k l ..." in out
    for name, spec in TASKS.items():
        assert f"\n{name:<12} {spec.description}\n" in "\n" + out
    dates = out[out.index("dates "):]
    assert "␣" in dates.splitlines()[2] and "(␣: space)" in dates.splitlines()[2]


def test_lm_generate_from_an_ngram_and_greedy_once(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the cat sat on the mat", "the dog sat on the log"] * 20) + "\n",
                      encoding="utf-8")
    r = run(["lm", "train", "--corpus", "corpus.txt", "--model", "ngram", "--order", "2",
             "--min-freq", "1", "--out", "ng"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["lm", "generate", "--model", "ng", "--n", "4", "--prompt", "the", "--top-k", "3"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("the ") for line in lines)
    assert set(" ".join(lines).split()) <= {"the", "cat", "dog", "sat", "on", "mat", "log", "<unk>"}
    r = run(["lm", "generate", "--model", "ng", "--greedy"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1
    r = run(["lm", "generate", "--model", "ng", "--greedy", "--n", "3"], tmp_path)
    assert r.returncode == 2
    assert "--greedy gives one sentence, the same every time; --n 3 would repeat it" in r.stderr


def test_lm_score_has_a_header_and_the_same_columns_ranked_or_not_and_as_json(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the cat sat on the mat", "the dog sat on the log"] * 20) + "\n",
                      encoding="utf-8")
    r = run(["lm", "train", "--corpus", "corpus.txt", "--model", "ngram", "--order", "2",
             "--min-freq", "1", "--out", "ng"], tmp_path)
    assert r.returncode == 0, r.stderr
    text = "mat the on sat cat the\nthe cat sat on the mat\n"
    plain = run(["lm", "score", "--model", "ng"], tmp_path, input=text).stdout.splitlines()
    ranked = run(["lm", "score", "--model", "ng", "--rank"], tmp_path, input=text).stdout.splitlines()
    header = "line\tlog-probability\ttokens\tperplexity\tsentence"
    assert plain[0] == header and ranked[0] == header
    assert [row.split("\t")[0] for row in plain[1:]] == ["1", "2", "total"]
    assert [row.split("\t")[0] for row in ranked[1:]] == ["2", "1", "total"]
    assert sorted(plain[1:3]) == sorted(ranked[1:3]) and plain[3] == ranked[3]
    assert all(len(row.split("\t")) == 5 for row in plain + ranked)
    data = json.loads(run(["lm", "score", "--model", "ng", "--json"], tmp_path, input=text).stdout)
    assert [row["sentence"] for row in data["rows"]] == ["mat the on sat cat the", "the cat sat on the mat"]
    first = plain[1].split("\t")
    assert f"{data['rows'][0]['logprob']:.4f}" == first[1] and str(data["rows"][0]["tokens"]) == first[2]
    assert data["total"]["tokens"] == sum(row["tokens"] for row in data["rows"])


def test_translate_on_a_terminal_answers_each_line_as_it_is_typed(model):
    import select
    cwd, _ = model
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minis2s", "translate", "--model", "model",
                             "--beam-size", "1", "--threads", "1"], cwd=cwd, env=env, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    answers = []
    try:
        assert select.select([proc.stderr], [], [], 60)[0], "no hint on stderr"
        assert proc.stderr.readline().decode().startswith("minis2s: reading sentences")
        for typed in (b"1 Jan 2000\n", b"3 Feb 2001\n"):
            os.write(master, typed)                  # no end of input yet: the answer must come
            ready = select.select([proc.stdout], [], [], 60)[0]
            assert ready, f"no answer to {typed!r} before the end of input"
            answers.append(proc.stdout.readline().decode().rstrip("\n"))
        assert proc.poll() is None                   # still reading
        os.write(master, b"\x04")                    # Ctrl-D
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(master)
    assert proc.returncode == 0, err
    assert rest == b""
    piped = run(["translate", "--model", "model", "--beam-size", "1"], cwd, input="1 Jan 2000\n3 Feb 2001\n")
    assert answers == piped.stdout.splitlines()


def _train_section(path):
    return json.loads(path.read_text(encoding="utf-8"))["train"]


def test_train_config_file_gives_defaults_that_flags_override(tmp_path):
    r = run(["train", "--task", "reverse", "--epochs", "1", "--out", "a", "--lr", "0.005", *TINY], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["train", "--config", "a/config.json", "--out", "b", "--epochs", "2", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = _train_section(tmp_path / "a" / "config.json"), _train_section(tmp_path / "b" / "config.json")
    assert b["epochs"] == 2 and b["out"] == "b"                     # the flags win
    assert {k: v for k, v in a.items() if k not in ("epochs", "out")} == \
           {k: v for k, v in b.items() if k not in ("epochs", "out")}    # the rest is a's
    assert b["lr"] == 0.005 and b["hidden_size"] == 8 and b["n_train"] == 100
    # a plain JSON mapping, dashes or underscores
    (tmp_path / "c.json").write_text(json.dumps({"task": "reverse", "hidden-size": 12, "emb_size": 6,
                                                 "n_train": 100, "n_valid": 20, "n_test": 20,
                                                 "epochs": 1, "attention": "dot"}))
    r = run(["train", "--config", "c.json", "--out", "c", "--layers", "2", "--quiet", "--threads", "1"], tmp_path)
    assert r.returncode == 0, r.stderr
    c = _train_section(tmp_path / "c" / "config.json")
    assert (c["hidden_size"], c["emb_size"], c["attention"], c["layers"]) == (12, 6, "dot", 2)


@pytest.mark.parametrize("content,message", [
    ({"hiden_size": 8}, "unknown key 'hiden_size' (not an option of 'minis2s train')"),
    ({"hidden_size": "big"}, "hidden_size (--hidden-size): expected a positive integer, got 'big'"),
    ({"attention": "bahdanau"}, "attention (--attention) must be one of general, dot, none, got 'bahdanau'"),
    ({"quiet": "yes"}, "quiet must be true or false"),
    ([1, 2], "expected a mapping of option names to values"),
])
def test_train_config_file_refuses_unknown_keys_and_bad_values(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(json.dumps(content))
    r = run(["train", "--config", "bad.json", "--out", "never"], tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_train_config_yaml_or_the_package_it_needs_and_never_with_resume(tmp_path):
    (tmp_path / "c.yaml").write_text("task: reverse\nhidden-size: 10\nn_train: 100\nn_valid: 20\n"
                                     "n_test: 20\nepochs: 1\nemb_size: 6\n")
    r = run(["train", "--config", "c.yaml", "--out", "y", "--quiet", "--threads", "1"], tmp_path)
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert r.returncode == 2
        assert "reading YAML needs PyYAML (pip install pyyaml)" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert _train_section(tmp_path / "y" / "config.json")["hidden_size"] == 10
    (tmp_path / "run").mkdir()
    r = run(["train", "--resume", "run", "--config", "c.yaml"], tmp_path)
    assert r.returncode == 2
    assert "--resume continues with the run's own config; --config cannot be given with it" in r.stderr


def test_export_writes_the_weights_and_config_as_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    import numpy as np
    sys.path.insert(0, str(REPO))
    from minis2s.checkpoint import load_checkpoint
    r = run(["train", "--task", "reverse", "--epochs", "1", "--out", "run", *TINY], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["export", "--model", "run", "--out", "run.safetensors"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote ") and "run.safetensors" in r.stdout
    tensors = safetensors_numpy.load_file(str(tmp_path / "run.safetensors"))
    best = load_checkpoint(tmp_path / "run" / "best.npz")["model"]
    assert set(tensors) == set(best)
    for name, value in best.items():
        assert tensors[name].dtype == value.dtype and np.array_equal(tensors[name], value), name
    from safetensors import safe_open
    with safe_open(str(tmp_path / "run.safetensors"), framework="numpy") as f:
        meta = f.metadata()
    assert json.loads(meta["minis2s_config"]) == json.loads((tmp_path / "run" / "config.json").read_text())
    r = run(["export", "--model", "nowhere", "--out", "x.safetensors"], tmp_path)
    assert r.returncode == 2 and "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_export_without_safetensors_names_the_package(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    import builtins
    from minis2s import export
    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name.startswith("safetensors"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    with pytest.raises(export.ExportError, match=r"pip install 'minis2s\[export\]'"):
        export.export_safetensors(tmp_path, tmp_path / "x.safetensors")


def test_exported_weights_load_into_the_pytorch_reference_with_the_same_loss(tmp_path):
    """Oracle: 'minis2s export' writes a run, safetensors.torch reads the file, benchmarks/common.py
    maps the names into its PyTorch model, and PyTorch's loss equals minis2s's on the same batch.
    (reverse: the two vocabularies have one size, as the PyTorch reference has one V.)"""
    torch = pytest.importorskip("torch", reason="torch not installed")
    st_torch = pytest.importorskip("safetensors.torch", reason="safetensors not installed")
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    import common
    import minis2s
    from grad import Tensor
    r = run(["train", "--task", "reverse", "--epochs", "1", "--layers", "2", "--out", "run", *TINY], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["export", "--model", "run", "--out", "run.safetensors"], tmp_path)
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert config["src_vocab_size"] == config["tgt_vocab_size"]
    cfg = dict(V=config["tgt_vocab_size"], E=config["emb_size"], H=config["hidden_size"],
               L=config["num_layers"], B=4, S=7, T=6)
    batch = common.make_batches(cfg, n_batches=1, seed=5)[0]
    model = minis2s.load(tmp_path / "run").model
    model.eval()                                           # no dropout, as the reference
    ours = float(model.loss(Tensor(batch["src"]), batch["src_lengths"], Tensor(batch["tgt_in"]),
                            Tensor(batch["tgt_out"])).item())
    reference = common.torch_model(cfg)
    common.load_minis2s_weights(reference, st_torch.load_file(str(tmp_path / "run.safetensors")), cfg["L"])
    with torch.no_grad():
        theirs = float(reference.loss(*(torch.from_numpy(batch[k]) for k in
                                        ("src", "src_lengths", "tgt_in", "tgt_out"))))
    assert theirs == pytest.approx(ours, rel=1e-5)
