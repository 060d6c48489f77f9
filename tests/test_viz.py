"""``grad.viz`` (DOT / Mermaid text, Graphviz rendering) and ``minis2s graph``.

The DOT and Mermaid tests need nothing but the library; the rendering tests need Graphviz's
``dot`` program (the system package ``graphviz``, which ``.ci/run`` installs when it can)."""
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

import grad
from grad import backend as B
from grad import nn, viz
from helpers import backends
from minis2s import cli
from minis2s.graph_cmd import build_graph

ROOT = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")

_DOT_NODE = re.compile(r'^  (n\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
_DOT_EDGE = re.compile(r"^  (n\d+) -> (n\d+);$")
_MMD_NODE = re.compile(r'^  (n\d+)[(\[]+"([^"]*)"[)\]]+$')
_MMD_EDGE = re.compile(r"^  (n\d+) --> (n\d+)$")


def parse_dot(text, ops=None):
    """``({node id: [label lines]}, [(from, to)], {ids with a double border})`` of our DOT text;
    the ids of op nodes (rounded boxes) are added to the set ``ops`` when given."""
    nodes, edges, outputs = {}, [], set()
    for line in text.splitlines():
        if m := _DOT_NODE.match(line):
            nodes[m[1]] = m[2].split("\\n")
            if "peripheries=2" in m[3]:
                outputs.add(m[1])
            if ops is not None and "rounded" in m[3]:
                ops.add(m[1])
        elif m := _DOT_EDGE.match(line):
            edges.append((m[1], m[2]))
    return nodes, edges, outputs


def parse_mermaid(text):
    nodes, edges = {}, []
    for line in text.splitlines():
        if m := _MMD_NODE.match(line):
            nodes[m[1]] = m[2].split("<br/>")
        elif m := _MMD_EDGE.match(line):
            edges.append((m[1], m[2]))
    return nodes, edges


def tiny_graph():
    """``s = sum((x @ w) * (x @ w)) + b`` with x an input, w and b parameters."""
    x = grad.tensor([[1.0, 2.0, 3.0]], requires_grad=True)                 # (1, 3)
    w = nn.Parameter(grad.tensor([[0.5, -1.0], [0.25, 0.0], [1.0, 2.0]]))  # (3, 2)
    b = nn.Parameter(grad.tensor(0.5))
    y = x @ w                                                              # (1, 2)
    s = (y * y).sum() + b
    return s, {"x": x, "w": w, "b": b}


def labelled_edges(nodes, edges):
    return sorted((nodes[a][0], nodes[b][0]) for a, b in edges)


@backends
def test_tiny_graph_dot_exact(backend):
    with B.use(backend):
        s, names = tiny_graph()
        text = viz.to_dot(s, names)
    assert text.startswith("digraph computation {") and text.rstrip().endswith("}")
    nodes, edges, outputs = parse_dot(text)
    # creation order: x, w, b, then the ops in the order they ran
    assert [nodes[f"n{i}"] for i in range(len(nodes))] == [
        ["x", "(1, 3)"], ["w", "(3, 2)"], ["b", "()"], ["matmul", "(1, 2)"], ["mul", "(1, 2)"],
        ["sum", "()"], ["add", "()"]]
    # y * y reads y twice: two edges
    assert labelled_edges(nodes, edges) == sorted([
        ("x", "matmul"), ("w", "matmul"), ("matmul", "mul"), ("matmul", "mul"), ("mul", "sum"),
        ("sum", "add"), ("b", "add")])
    assert outputs == {"n6"}
    assert 'label="w\\n(3, 2)", shape=box, fillcolor="#fde8c8"' in text      # a parameter
    assert 'label="x\\n(1, 3)", shape=box, fillcolor="#dff0d8"' in text      # a named input


def test_tiny_graph_mermaid_matches_dot():
    s, names = tiny_graph()
    text = viz.to_mermaid(s, names)
    assert text.splitlines()[0] == "flowchart TB"
    nodes, edges = parse_mermaid(text)
    d_nodes, d_edges, _ = parse_dot(viz.to_dot(s, names))
    assert nodes == d_nodes and edges == d_edges
    assert "  class n1,n2 param" in text and "  class n0 input" in text
    assert "  class n6 output" in text


def test_output_is_stable_and_independent_of_ids():
    first = viz.to_dot(*tiny_graph())
    for _ in range(2):
        s, names = tiny_graph()                                           # new tensors, new ids
        assert viz.to_dot(s, names) == first
        assert viz.to_mermaid(s, names) == viz.to_mermaid(s, names)


def test_leaf_kinds_outputs_and_a_module_for_names():
    lin = nn.Linear(2, 3)
    x = grad.tensor([[1.0, -1.0]])                                        # needs no grad
    h = grad.tensor([[0.5, 0.5, 0.5]], requires_grad=True)                # unnamed leaf
    out = lin(x) * h
    nodes, edges, outputs = parse_dot(viz.to_dot({"out": out}, lin))
    labels = sorted(lines[0] for lines in nodes.values())
    assert labels == ["bias", "constant", "leaf", "linear", "out = mul", "weight"]
    assert len(edges) == 5 and len(outputs) == 1
    unnamed = parse_dot(viz.to_dot(out))[0]                               # no names given
    assert sorted(v[0] for v in unnamed.values()).count("parameter") == 2
    both = parse_dot(viz.to_dot([out, h]))[2]                             # two outputs
    assert len(both) == 2


def test_freed_graph_and_bad_arguments_are_refused():
    s, names = tiny_graph()
    s.backward(retain_graph=True)
    assert len(parse_dot(viz.to_dot(s, names))[0]) == 7                   # kept
    s.backward()
    with pytest.raises(ValueError, match="freed by backward"):
        viz.to_dot(s, names)
    with pytest.raises(TypeError, match="Tensor"):
        viz.to_dot([1.0])
    with pytest.raises(TypeError, match="'w'"):
        viz.to_dot(s, {"w": 3.0})
    with pytest.raises(ValueError, match=r"\.svg, \.png or \.pdf"):
        viz.draw(*tiny_graph()[:1], "graph.txt")


# --------------------------------------------------------------------------- the model graphs
def graph_of(what, reference=True, num_layers=1):
    outputs, names = build_graph("seq2seq", what, num_layers, reference=reference)
    ops = set()
    nodes, edges, roots = parse_dot(viz.to_dot(outputs, names), ops)
    check_connected(nodes, edges, roots, ops)
    return (nodes, edges, roots), outputs, names


def check_connected(nodes, edges, outputs, ops):
    """Every node feeds another or is an output; every op has an input; leaves have none."""
    assert ops and len(ops) < len(nodes)
    sources = {a for a, _ in edges}
    targets = {b for _, b in edges}
    for node_id, lines in nodes.items():
        assert node_id in sources or node_id in outputs, f"{lines} leads nowhere"
        assert (node_id in targets) == (node_id in ops), f"{lines}: inputs do not match its kind"


def test_decoder_step_graph_names_every_decoder_parameter_and_shape():
    (nodes, edges, outputs), outs, names = graph_of("decoder-step")
    labels = [lines[0] for lines in nodes.values()]
    decoder = [n for n in names if n.startswith("decoder.")]
    assert decoder and set(decoder) <= set(labels)
    assert not [n for n in labels if n.startswith("encoder.")]            # one step, no encoder
    log_probs = [v for v in nodes.values() if v[0].startswith("log_probs = ")]
    assert "log_probs" in outs and [v[1] for v in log_probs] == ["(2, 10)"]   # (B, V)
    assert ["embedding", "(2, 6)"] in nodes.values()                      # emb(y_{t-1}): (B, E)
    assert len(outputs) == len(outs) >= 2                                 # log-probs and state
    assert len(edges) >= len(nodes) - 1


def test_loss_and_lstm_step_graphs():
    (nodes, edges, outputs), outs, names = graph_of("loss")
    labels = {lines[0] for lines in nodes.values()}
    assert set(names) <= labels                                           # every parameter used
    loss_node = [v for v in nodes.values() if v[0].startswith("loss = ")]
    assert len(loss_node) == 1 and loss_node[0][1] == "()"
    (nodes, edges, outputs), outs, names = graph_of("lstm-step")
    labels = {lines[0] for lines in nodes.values()}
    assert {"x_t", "h_{t-1}", "c_{t-1}", "decoder.rnn.weight_ih_l0",
            "decoder.rnn.weight_hh_l0"} <= labels
    assert sorted(outs) == ["c_t", "h_t"] and len(outputs) == 2
    for what in ("lstm-step", "decoder-step"):                             # two layers
        (nodes, _, _), _, names = graph_of(what, num_layers=2)
        labels = {lines[0] for lines in nodes.values()}
        assert {"decoder.rnn.weight_ih_l1", "decoder.rnn.weight_hh_l1"} <= labels, what


def test_reference_mode_graph_has_no_fused_node():
    fused_functions = getattr(grad.modes, "fused_functions", None)
    if fused_functions is None:
        pytest.skip("this version has no reference-mode registry (grad.modes.fused_functions)")
    # getitem's reference records the same node (only its gradient is dense, not sparse)
    fused = {f.__name__ for f in fused_functions()} - {"getitem"}
    for what in ("lstm-step", "decoder-step", "loss"):
        ops_ = {lines[0].split(" = ")[-1] for lines in graph_of(what)[0][0].values()}
        assert not ops_ & fused, (what, ops_ & fused)
        fast = {lines[0].split(" = ")[-1] for lines in graph_of(what, reference=False)[0][0].values()}
        assert fast & fused, what                                         # the fast path is fused


# --------------------------------------------------------------------------- the command
def test_cli_writes_dot_mermaid_and_markdown(tmp_path, capsys):
    assert cli.main(["graph", "--what", "decoder-step", "--out", str(tmp_path / "g.dot")]) == 0
    assert "decoder-step:" in capsys.readouterr().out
    nodes, edges, _ = parse_dot((tmp_path / "g.dot").read_text())
    outputs, names = build_graph("seq2seq", "decoder-step")
    assert (nodes, edges) == parse_dot(viz.to_dot(outputs, names))[:2]
    assert cli.main(["graph", "--what", "loss", "--out", str(tmp_path / "g.mmd")]) == 0
    assert (tmp_path / "g.mmd").read_text().startswith("flowchart TB\n")
    assert cli.main(["graph", "--arch", "seq2seq", "--what", "lstm-step",
                     "--out", str(tmp_path / "g.md")]) == 0
    md = (tmp_path / "g.md").read_text()
    assert md.startswith("```mermaid\nflowchart TB\n") and md.endswith("```\n")


@pytest.mark.parametrize("args, message", [
    (["--what", "encoder", "--out", "g.dot"], "invalid choice: 'encoder'"),
    (["--what", "loss", "--out", "g.txt"], "ending in .dot, .mmd, .md, .svg, .png"),
    (["--what", "loss", "--arch", "transformer", "--out", "g.dot"], "invalid choice"),
])
def test_cli_refuses_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["graph", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_refuses_a_missing_directory(tmp_path, capsys):
    assert cli.main(["graph", "--what", "loss", "--out", str(tmp_path / "no" / "g.dot")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_missing_dot_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))                             # no dot on PATH
    s, names = tiny_graph()
    target = tmp_path / "graph.svg"
    with pytest.raises(viz.GraphvizNotFoundError, match="system package graphviz"):
        viz.draw(s, target, names)
    assert not target.exists()
    assert cli.main(["graph", "--what", "loss", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "'dot' program" in err and "graphviz" in err and "FILE.dot" in err
    assert not target.exists() and list(tmp_path.iterdir()) == []


@needs_dot
def test_draw_renders_svg_and_png(tmp_path):
    s, names = tiny_graph()
    svg = tmp_path / "g.svg"
    svg.write_text("old")
    assert viz.draw(s, svg, names) == str(svg)
    texts = [t.text for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert Counter(texts) == Counter(["x", "(1, 3)", "w", "(3, 2)", "b", "()", "matmul", "(1, 2)",
                                      "mul", "(1, 2)", "sum", "()", "add", "()"])
    png = tmp_path / "g.png"
    viz.draw(s, png, names)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "g.svg"]   # no temp files


@needs_dot
def test_cli_renders_svg(tmp_path):
    out = tmp_path / "step.svg"
    assert cli.main(["graph", "--what", "decoder-step", "--out", str(out)]) == 0
    assert "decoder.attention.combine.weight" in out.read_text()


def svg_labels(path) -> Counter:
    root = ET.parse(path).getroot()
    return Counter(t.text for t in root.iter("{http://www.w3.org/2000/svg}text"))


def test_committed_decoder_step_picture_is_current():
    """docs/images/decoder-step-graph.svg shows the graph `minis2s graph` draws today (same
    labels; the layout is Graphviz's): regenerate it with the command docs/concepts.md shows."""
    outputs, names = build_graph("seq2seq", "decoder-step")
    expected = Counter(line for _, _, lines in viz.collect(outputs, names).nodes for line in lines)
    assert svg_labels(ROOT / "docs" / "images" / "decoder-step-graph.svg") == expected, (
        "regenerate: minis2s graph --arch seq2seq --what decoder-step "
        "--out docs/images/decoder-step-graph.svg")


def test_viz_imports_only_the_standard_library_and_grad():
    import ast
    import sys
    tree = ast.parse((ROOT / "grad" / "viz.py").read_text(encoding="utf-8"))
    outside = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            outside += [a.name for a in node.names if a.name.split(".")[0] not in sys.stdlib_module_names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module.split(".")[0] not in sys.stdlib_module_names | {"__future__"}:
                outside.append(node.module)
    assert outside == []
