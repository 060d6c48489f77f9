"""``minis2s graph``: draw the computation graph of one piece of a small model (``grad.viz``).

    minis2s graph --arch seq2seq --what decoder-step --out docs/images/decoder-step-graph.svg
    minis2s graph --what lstm-step --out lstm.dot        # Graphviz DOT text
    minis2s graph --what loss --out loss.md              # a Mermaid flowchart in a Markdown file

``lstm-step``     one time step of the decoder's LSTM (``nn.LSTM.cell``, layer by layer):
                  ``(x_t, h, c) -> (h', c')``
``decoder-step``  one decoder step with input feeding and attention, through the decoder-step
                  interface that search uses (``init_decoding``, then ``decode_step``): from the
                  state (encoder outputs, LSTM states, previous attentional vector) to the next
                  log-probabilities and state
``loss``          the cross-entropy of a whole small batch: encoder, every decoder step, the loss

The model is a small ``Seq2Seq`` (vocabularies of 10, embeddings of 6, 8 hidden units, a batch of
2 sentences) with seeded weights, so the picture is the same on every run. The graph is recorded
inside ``grad.reference_mode()``, so each fused fast path that has a composed reference shows up op
by op; ``--fast`` draws the graph that training really records (fused nodes). The suffix of
``--out`` picks the format: ``.dot`` (DOT text), ``.mmd`` (Mermaid text), ``.md`` (Mermaid in a
fenced block), ``.svg``/``.png`` (rendered by Graphviz's ``dot`` program, which must be installed:
the system package ``graphviz``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

WHAT = ("lstm-step", "decoder-step", "loss")
ARCHS = ("seq2seq",)
SUFFIXES = (".dot", ".mmd", ".md", ".svg", ".png")
SIZES = dict(vocab=10, emb=6, hidden=8, batch=2, src_len=4, tgt_len=3)


def _out_path(text: str) -> Path:
    """``--out``'s argparse type: the suffix must name a format we write."""
    path = Path(text)
    if path.suffix.lower() not in SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"expected a file name ending in {', '.join(SUFFIXES)}, got {text!r}")
    return path


def add_graph_parser(sub) -> None:
    """Register ``graph`` on the ``minis2s`` subcommand parser ``sub``."""
    g = sub.add_parser("graph", help="draw the computation graph of a model piece (grad.viz)",
                       description="Draw the computation graph of one LSTM step, one decoder step "
                                   "or a whole small loss of a small seeded model, recorded in "
                                   "reference mode so every op is visible.")
    g.add_argument("--arch", choices=ARCHS, default="seq2seq")
    g.add_argument("--what", required=True, choices=WHAT)
    g.add_argument("--out", required=True, type=_out_path, metavar="FILE",
                   help="the format follows the suffix: .dot, .mmd, .md (Mermaid), .svg, .png "
                        "(these two need Graphviz's dot program)")
    g.add_argument("--num-layers", type=int, choices=(1, 2, 3), default=1,
                   help="LSTM layers of the small model")
    g.add_argument("--fast", action="store_true",
                   help="record the fast path (fused nodes) instead of reference mode")
    g.set_defaults(func=cmd_graph)


def cmd_graph(args) -> int:
    from grad import viz
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {args.out}: no such directory {out.parent}")
    suffix = out.suffix.lower()
    if suffix in (".svg", ".png"):
        try:
            viz.find_dot()                            # refuse before any work when dot is missing
        except viz.GraphvizNotFoundError:
            raise ValueError(f"--out {args.out}: rendering {suffix} needs the Graphviz 'dot' "
                             "program, which is not on PATH: install the system package graphviz "
                             "(apt-get install graphviz, brew install graphviz), or write text "
                             "with --out FILE.dot, FILE.mmd or FILE.md") from None
    outputs, names = build_graph(args.arch, args.what, args.num_layers, reference=not args.fast)
    if suffix == ".dot":
        out.write_text(viz.to_dot(outputs, names), encoding="utf-8")
    elif suffix == ".mmd":
        out.write_text(viz.to_mermaid(outputs, names), encoding="utf-8")
    elif suffix == ".md":
        out.write_text("```mermaid\n" + viz.to_mermaid(outputs, names) + "```\n", encoding="utf-8")
    else:
        viz.draw(outputs, out, names)
    graph = viz.collect(outputs, names)
    mode = "fast path" if args.fast else "reference mode"
    print(f"wrote {out} ({args.what}: {len(graph.nodes)} nodes, {len(graph.edges)} edges, {mode})")
    return 0


# ----------------------------------------------------------------------------- the graphs
def small_model(num_layers: int = 1):
    """The small seeded Seq2Seq the pictures are drawn from (no dropout: no random nodes)."""
    import grad
    from .models import Seq2Seq
    s = SIZES
    return Seq2Seq(s["vocab"], s["vocab"], emb_size=s["emb"], hidden_size=s["hidden"],
                   num_layers=num_layers, dropout=0.0, generator=grad.Generator(0))


def small_batch():
    """Two source sentences (the second padded), their lengths, and target in/out ``(2, 3)``."""
    import numpy as np
    src = np.array([[5, 6, 7, 2], [8, 9, 2, 0]], dtype=np.int64)           # (B, S), PAD = 0
    lengths = np.array([4, 3], dtype=np.int64)
    tgt_in = np.array([[1, 7, 6], [1, 9, 8]], dtype=np.int64)              # BOS y1 y2
    tgt_out = np.array([[7, 6, 5], [9, 8, 2]], dtype=np.int64)             # y1 y2 y3
    return src, lengths, tgt_in, tgt_out


def build_graph(arch: str, what: str, num_layers: int = 1, reference: bool = True):
    """Run the piece ``what`` of a small ``arch`` model; returns ``(outputs, names)``: a mapping
    output name -> Tensor for ``grad.viz`` and the names of the leaves (parameters, inputs)."""
    import grad
    if arch not in ARCHS:
        raise ValueError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if what not in WHAT:
        raise ValueError(f"--what must be one of {', '.join(WHAT)}, got {what!r}")
    model = small_model(num_layers)
    names = dict(model.named_parameters())
    with grad.reference_mode(reference), grad.enable_grad():
        outputs, inputs = _BUILDERS[what](model)
    names.update(inputs)
    return outputs, names


def _leaf(shape, name: str, inputs: dict, seed: int):
    """A named input leaf that requires grad, so the graph shows everything computed from it."""
    import grad
    t = grad.Tensor(grad.Generator(seed).uniform(shape, -0.5, 0.5, "float32"), requires_grad=True)
    inputs[name] = t
    return t


def _lstm_step(model):
    """One time step of the decoder's LSTM, through every layer (the first reads ``x_t``)."""
    rnn = model.decoder.rnn
    batch, hidden, n_layers = SIZES["batch"], rnn.hidden_size, rnn.num_layers
    inputs = {}
    x = _leaf((batch, rnn.input_size), "x_t", inputs, 1)                   # (B, E + H)
    outputs = {}
    for k in range(n_layers):
        at = "" if n_layers == 1 else f" layer {k}"
        h = _leaf((batch, hidden), "h_{t-1}" + at, inputs, 2 + 2 * k)      # (B, H)
        c = _leaf((batch, hidden), "c_{t-1}" + at, inputs, 3 + 2 * k)      # (B, H)
        x, c_t = rnn.cell(k, x, (h, c))                                    # next layer reads h_t
        outputs["h_t" + at], outputs["c_t" + at] = x, c_t
    return outputs, inputs


def _decoder_step(model):
    """One decoder step from a given state: what greedy and beam search run at every step."""
    import grad
    from .models.seq2seq import as_ids
    src, lengths, tgt_in, _ = small_batch()
    prev = as_ids(tgt_in[:, 1])                                            # (B,) y_{t-1}
    inputs = {}
    with grad.no_grad():                          # the encoder is not part of this picture
        state = model.init_decoding(as_ids(src), lengths)
    _state_leaves(state, "state", inputs)
    log_probs, state, attention = model.decode_step(prev, state)
    outputs = {"log_probs": log_probs}
    outputs.update({f"next {name}": t for name, t in _state_tensors(state, "state") if t._op})
    if isinstance(attention, grad.Tensor) and attention._op:
        outputs["attention"] = attention
    return outputs, inputs


def _loss(model):
    """The cross-entropy of one small batch: encoder, decoder unrolled over 3 steps, the loss."""
    src, lengths, tgt_in, tgt_out = small_batch()
    return {"loss": model.loss(src, lengths, tgt_in, tgt_out)}, {}


_BUILDERS = {"lstm-step": _lstm_step, "decoder-step": _decoder_step, "loss": _loss}


# ----------------------------------------------------------------------------- decoder state
def _attributes(state) -> list:
    if hasattr(state, "__dict__"):
        return list(vars(state))
    return [name for cls in type(state).__mro__ for name in getattr(cls, "__slots__", ())]


def _state_tensors(state, prefix: str):
    """``(name, Tensor)`` for every Tensor held by the state object (directly, or in a list or
    tuple attribute), named by attribute path: ``state.memory``, ``state.h[0]``."""
    from grad.tensor import Tensor
    for attr in _attributes(state):
        value = getattr(state, attr, None)
        items = [(f"{prefix}.{attr}", value)] if isinstance(value, Tensor) else \
            [(f"{prefix}.{attr}[{i}]", v) for i, v in enumerate(value)] \
            if isinstance(value, (list, tuple)) else []
        yield from ((name, t) for name, t in items if isinstance(t, Tensor))


def _state_leaves(state, prefix: str, inputs: dict) -> None:
    """Replace each floating Tensor of the state by a named leaf that requires grad (same data),
    so the step's graph starts at the state and shows everything computed from it."""
    from grad import backend as B
    from grad.tensor import Tensor

    def leaf(name, t):
        if not isinstance(t, Tensor) or not B.is_floating(t.dtype):
            return t
        inputs[name] = Tensor(t.data, requires_grad=True)
        return inputs[name]

    for attr in _attributes(state):
        value = getattr(state, attr, None)
        if isinstance(value, Tensor):
            new = leaf(f"{prefix}.{attr}", value)
        elif isinstance(value, list):
            new = [leaf(f"{prefix}.{attr}[{i}]", v) for i, v in enumerate(value)]
        elif type(value) is tuple:
            new = tuple(leaf(f"{prefix}.{attr}[{i}]", v) for i, v in enumerate(value))
        else:
            continue
        object.__setattr__(state, attr, new)
