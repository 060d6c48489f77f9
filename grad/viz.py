"""A picture of the computation graph: the record that ``backward()`` walks, drawn.

Every op result remembers its op name (``_op``) and its inputs (``_parents``); following
``_parents`` from a result back to the leaves gives the graph. This module writes it out as text::

    loss = ((x @ w) ** 2).sum()
    print(grad.viz.to_dot(loss, {"w": w}))       # Graphviz DOT
    print(grad.viz.to_mermaid(loss, {"w": w}))   # a Mermaid flowchart, for Markdown
    grad.viz.draw(loss, "graph.svg", {"w": w})   # rendered by Graphviz's ``dot`` program

* an **op node** is labelled with the op's name and the shape of its output;
* a **leaf** is labelled with its name when ``params`` names it (a parameter of a model, or an
  input you name yourself), otherwise as ``parameter``, ``leaf`` (requires grad) or
  ``constant`` (an input that needs no gradient), with its shape;
* an **edge** ``a -> b`` means that ``a`` is an input of the op that made ``b`` (data flows
  along the arrows, the opposite way to the gradients); an op that reads the same tensor twice
  (``x * x``) gets two edges;
* the graph's outputs (the tensors passed in) have a double border.

Nodes are numbered in the order they were created (inputs before the ops that read them), so the
same code draws the same text every time. Draw the graph *before* ``backward()``: by default
backward frees the graph it walks (``backward(retain_graph=True)`` keeps it).

Only the standard library is used: ``draw`` runs the ``dot`` program of the Graphviz system
package (``apt-get install graphviz``, ``brew install graphviz``) when it is on the ``PATH``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from .tensor import Tensor

__all__ = ["Graph", "GraphvizNotFoundError", "collect", "draw", "to_dot", "to_mermaid"]

# fill colours by node kind (shared by DOT and Mermaid)
_COLOURS = {"op": "#e8eef7", "param": "#fde8c8", "input": "#dff0d8", "leaf": "#f2f2f2",
            "constant": "#ffffff"}


class GraphvizNotFoundError(FileNotFoundError):
    """``draw`` needs the ``dot`` program of the Graphviz system package, and it is not on PATH."""


class Graph:
    """The nodes and edges behind some tensors, in a stable order.

    ``nodes``: ``(node_id, kind, label_lines)`` per node, ``kind`` one of ``op``, ``param``,
    ``input`` (a leaf named in ``params`` that is not a parameter), ``leaf``, ``constant``;
    ``edges``: ``(from_id, to_id)`` pairs in data-flow direction; ``outputs``: ids of the roots.
    """

    def __init__(self, nodes, edges, outputs):
        self.nodes, self.edges, self.outputs = nodes, edges, outputs


def _names(params) -> dict:
    """``id(tensor) -> name`` from a Module, a mapping name -> tensor, or ``(name, tensor)`` pairs."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    items = params.items() if hasattr(params, "items") else params
    names = {}
    for name, t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"params: {name!r} is a {type(t).__name__}, not a Tensor")
        names.setdefault(id(t), str(name))      # a tensor named twice keeps its first name
    return names


def _roots(tensor) -> list:
    """``[(output name or None, Tensor)]`` from a Tensor, a sequence of them or a name mapping."""
    if isinstance(tensor, Tensor):
        return [(None, tensor)]
    items = list(tensor.items()) if hasattr(tensor, "items") else [(None, t) for t in tensor]
    if not items:
        raise ValueError("nothing to draw: no tensors given")
    for name, t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"can only draw Tensors, got a {type(t).__name__}"
                            + (f" for {name!r}" if name is not None else ""))
    return items


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.ndim == 1 else "") + ")"


def collect(tensor, params=None) -> Graph:
    """The graph behind ``tensor`` (a Tensor, a list of Tensors or a mapping name -> Tensor).

    ``params`` names leaves: a Module (its ``named_parameters()``), a mapping name -> Tensor or
    ``(name, Tensor)`` pairs. Raises ``ValueError`` on a graph already freed by ``backward()``.
    """
    names = _names(params)
    roots = _roots(tensor)
    found = {}                                   # id -> tensor, every node reachable
    todo = [t for _, t in roots]
    while todo:
        t = todo.pop()
        if id(t) in found:
            continue
        found[id(t)] = t
        if t._op and not t._parents:             # an op result whose record backward released
            raise ValueError(f"the graph behind this {t._op} result was freed by backward(); draw "
                             "it before backward(), or call backward(retain_graph=True)")
        todo.extend(t._parents)
    # Creation order: a parent is always made before the ops that read it, so this is also a
    # topological order, and it does not depend on ids or on the order of the search.
    order = sorted(found.values(), key=lambda t: t._seq)
    number = {id(t): i for i, t in enumerate(order)}
    out_names = {}
    for name, t in roots:
        if name is not None:
            out_names.setdefault(id(t), str(name))
    nodes = []
    for t in order:
        key = id(t)
        if t._op:
            kind, lines = "op", [t._op, _shape(t)]
        elif key in names:
            kind = "param" if getattr(t, "_is_parameter", False) else "input"
            lines = [names[key], _shape(t)]
        elif getattr(t, "_is_parameter", False):
            kind, lines = "param", ["parameter", _shape(t)]
        elif t.requires_grad:
            kind, lines = "leaf", ["leaf", _shape(t)]
        else:
            kind, lines = "constant", ["constant", _shape(t)]
        if key in out_names and t._op:
            lines = [out_names[key] + " = " + lines[0]] + lines[1:]
        nodes.append((f"n{number[key]}", kind, lines))
    edges = [(f"n{number[id(p)]}", f"n{number[id(t)]}") for t in order for p in t._parents]
    seen, outputs = set(), []
    for _, t in roots:
        if id(t) not in seen:
            seen.add(id(t))
            outputs.append(f"n{number[id(t)]}")
    return Graph(nodes, edges, outputs)


# ------------------------------------------------------------------------------ Graphviz DOT
def _dot_label(lines) -> str:
    """A quoted DOT string, one ``\\n``-separated line per entry of ``lines``."""
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(escaped) + '"'


def to_dot(tensor, params=None, *, rankdir: str = "TB") -> str:
    """Graphviz DOT text of the graph behind ``tensor`` (see ``collect`` for the arguments).

    ``rankdir="TB"`` draws inputs at the top and the outputs at the bottom (``"LR"``: left to
    right). Render it with ``dot -Tsvg graph.dot -o graph.svg``, or use ``draw``.
    """
    g = collect(tensor, params)
    outputs = set(g.outputs)
    lines = ["digraph computation {",
             f"  graph [rankdir={rankdir}, fontname=Helvetica, nodesep=0.25, ranksep=0.3];",
             '  node [fontname=Helvetica, fontsize=10, style=filled, penwidth=0.8];',
             "  edge [arrowsize=0.6, penwidth=0.8];"]
    shapes = {"op": 'shape=box, style="rounded,filled"', "param": "shape=box",
              "input": "shape=box", "leaf": "shape=ellipse",
              "constant": 'shape=ellipse, style="dashed,filled"'}
    for node_id, kind, label in g.nodes:
        attrs = [f"label={_dot_label(label)}", shapes[kind],
                 f'fillcolor="{_COLOURS[kind]}"']
        if node_id in outputs:
            attrs.append("peripheries=2")
        lines.append(f"  {node_id} [{', '.join(attrs)}];")
    for a, b in g.edges:
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ Mermaid
def _mermaid_text(lines) -> str:
    text = "<br/>".join(lines)
    return '"' + text.replace('"', "#quot;") + '"'


def to_mermaid(tensor, params=None, *, direction: str = "TB") -> str:
    """The same graph as a Mermaid ``flowchart`` (paste it into a ```` ```mermaid ```` block
    of a Markdown file). Ops are rounded boxes, named leaves rectangles, other leaves stadiums;
    the outputs have a thick border (class ``output``)."""
    g = collect(tensor, params)
    brackets = {"op": ("(", ")"), "param": ("[", "]"), "input": ("[", "]"),
                "leaf": ("([", "])"), "constant": ("([", "])")}
    lines = [f"flowchart {direction}"]
    for node_id, kind, label in g.nodes:
        left, right = brackets[kind]
        lines.append(f"  {node_id}{left}{_mermaid_text(label)}{right}")
    for a, b in g.edges:
        lines.append(f"  {a} --> {b}")
    for kind, colour in _COLOURS.items():
        members = [node_id for node_id, k, _ in g.nodes if k == kind]
        if members:
            dashes = ",stroke-dasharray:3 3" if kind == "constant" else ""
            lines.append(f"  classDef {kind} fill:{colour},stroke:#555{dashes}")
            lines.append(f"  class {','.join(members)} {kind}")
    lines.append("  classDef output stroke-width:3px")
    lines.append(f"  class {','.join(g.outputs)} output")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ rendering
def find_dot() -> str:
    """The path of Graphviz's ``dot`` program, or ``GraphvizNotFoundError`` naming the package."""
    path = shutil.which("dot")
    if path is None:
        raise GraphvizNotFoundError(
            "drawing needs the Graphviz 'dot' program, which is not on PATH: install the system "
            "package graphviz (apt-get install graphviz, brew install graphviz or conda install "
            "graphviz), or write the text with grad.viz.to_dot / to_mermaid instead")
    return path


def draw(tensor, path, params=None, *, rankdir: str = "TB") -> str:
    """Render the graph behind ``tensor`` to ``path`` (``.svg``, ``.png`` or ``.pdf``, by its
    suffix) with Graphviz's ``dot`` program; returns the path. The file is written whole or not at
    all: an existing file at ``path`` is replaced only once rendering has succeeded."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"draw: {path}: the file name must end in .svg, .png or .pdf "
                         "(for DOT or Mermaid text use to_dot / to_mermaid)")
    text = to_dot(tensor, params, rankdir=rankdir)
    dot = find_dot()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix="." + fmt, prefix=".graph-", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([dot, f"-T{fmt}", "-o", tmp], input=text.encode("utf-8"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"draw: {path}: Graphviz dot failed (exit {done.returncode})"
                               + (f": {message[-1]}" if message else ""))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
