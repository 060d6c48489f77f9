"""``minis2s figures``: draw the figures of the concept guides (docs/images) from the library.

    minis2s figures --out docs/images            # all four, as committed (about a minute)
    minis2s figures --out /tmp/f --tiny          # seconds: small settings (what the tests run)
    minis2s figures --out docs/images --only entropy decoder-step

``entropy``       a flat and a sharp distribution with their entropies (concepts.md section 4)
``lm-order``      test perplexity against n-gram order, add-k and Kneser-Ney, the LSTM as a line,
                  on the built-in brackets and markov corpora (``minis2s lm compare``; section 7)
``decoder-step``  one unrolled decoder step with input feeding and attention (section 15)
``tf-curves``     token accuracy teacher-forced and free-running over training (section 12)

Needs matplotlib (``pip install 'minis2s[plot]'``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FIGURES = ("entropy", "lm-order", "decoder-step", "tf-curves")


def add_figures_parser(sub) -> None:
    """Register ``figures`` on the ``minis2s`` subcommand parser ``sub``."""
    f = sub.add_parser("figures", help="draw the concept guides' figures (docs/images)",
                       description="Draw the figures of docs/concepts.md from the library.")
    f.add_argument("--out", default="docs/images", metavar="DIR", help="default: docs/images")
    f.add_argument("--only", nargs="+", choices=FIGURES, metavar="NAME",
                   help=f"some of: {', '.join(FIGURES)} (default: all)")
    f.add_argument("--tiny", action="store_true", help="small settings: seconds, for the tests")
    f.set_defaults(func=cmd_figures)


def cmd_figures(args) -> int:
    out = Path(args.out)
    if not out.is_dir():
        raise ValueError(f"--out {args.out}: no such directory")
    for name in args.only or FIGURES:
        path = DRAW[name](out, tiny=args.tiny)
        print(f"wrote {path}")
    return 0


def _plt():
    from .plot import _pyplot
    return _pyplot()


# ----------------------------------------------------------------------------- entropy
def draw_entropy(out: Path, tiny: bool = False) -> Path:
    """A flat and a sharp distribution over the six faces of a die, with their entropies."""
    from .metrics import entropy, perplexity
    plt = _plt()
    faces = np.arange(1, 7)
    dists = [("flat (a fair die)", np.full(6, 1 / 6)),
             ("sharp (a die that nearly always shows 3)", np.array([.02, .02, .9, .02, .02, .02]))]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), sharey=True)
    for ax, (name, p) in zip(axes, dists):
        h_bits, h_nats = entropy(p, base=2), entropy(p)
        ax.bar(faces, p, color="C0" if "flat" in name else "C3")
        ax.set_title(f"{name}\nH = {h_bits:.2f} bits = {h_nats:.2f} nats, perplexity "
                     f"{perplexity(h_nats):.2f}", fontsize=9.5)
        ax.set_xticks(faces)
        ax.set_xlabel("outcome x")
        ax.set_ylim(0, 1)
        for x, v in zip(faces, p):
            ax.text(x, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    axes[0].set_ylabel("p(x)")
    fig.suptitle("Entropy = expected information content: flat is high, sharp is low", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "entropy-flat-sharp.png")


# ----------------------------------------------------------------------------- lm-order
def draw_lm_order(out: Path, tiny: bool = False) -> Path:
    """Test perplexity by n-gram order (add-k, Kneser-Ney) and the LSTM, from ``lm compare``'s
    ``minis2s.lm.training.compare`` with its defaults as the docs ran it (3 LSTM epochs)."""
    from .lm.training import compare
    plt = _plt()
    lstm = dict(epochs=1, hidden_size=8, emb_size=4, batch_size=512, quiet=True) if tiny else \
        dict(epochs=3, quiet=True)
    orders = range(1, 3 if tiny else 6)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for ax, corpus in zip(axes, ("brackets", "markov")):
        rows, info = compare(corpus, lstm, orders=orders, log=lambda m: None)
        for smoothing, marker in (("add-k", "s"), ("kneser-ney", "o")):
            ppl = [p for name, p, _ in rows if name.endswith(smoothing)]
            ax.plot(list(orders), ppl, marker=marker, label=f"n-gram, {smoothing}")
        lstm_name, lstm_ppl, _ = rows[-1]
        ax.axhline(lstm_ppl, color="C2", ls="--", label=f"{lstm_name}: {lstm_ppl:.2f}")
        if "best_perplexity" in info:
            ax.axhline(info["best_perplexity"], color="0.4", ls=":",
                       label=f"the source's entropy rate: {info['best_perplexity']:.3f}")
        ax.set_title(f"{corpus}", fontsize=10)
        ax.set_xlabel("n-gram order")
        ax.set_xticks(list(orders))
        ax.set_ylabel("test perplexity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Test perplexity against n-gram order (minis2s lm compare)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "lm-perplexity-vs-order.png")


# ----------------------------------------------------------------------------- decoder-step
def draw_decoder_step(out: Path, tiny: bool = False) -> Path:
    """Boxes and arrows: one decoder step, t, with input feeding and Luong attention."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 5.4))
    ax.set_xlim(-0.1, 11.2)
    ax.set_ylim(0, 5.6)
    ax.axis("off")
    boxes = {}

    def box(key, x, y, text, color, w=1.7, h=0.62):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04",
                                    fc=color, ec="0.25", lw=1))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.6)
        boxes[key] = (x, y, w, h)

    def arrow(a, b, text="", side=(0, 0), color="0.2", style="-|>", rad=0.0, offset=(0, 0)):
        (x0, y0, w0, h0), (x1, y1, w1, h1) = boxes[a], boxes[b]
        start = (x0 + side[0] * w0 / 2, y0 + side[1] * h0 / 2) if side != (0, 0) else None
        dx, dy = x1 - x0, y1 - y0
        if start is None:
            start = (x0 + (w0 / 2 if abs(dx) > abs(dy) else 0) * np.sign(dx),
                     y0 + (h0 / 2 if abs(dy) >= abs(dx) else 0) * np.sign(dy))
        end = (x1 - (w1 / 2 if abs(dx) > abs(dy) else 0) * np.sign(dx),
               y1 - (h1 / 2 if abs(dy) >= abs(dx) else 0) * np.sign(dy))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color,
                                     lw=1.2, connectionstyle=f"arc3,rad={rad}"))
        if text:
            ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                    fontsize=7.8, color=color, ha="center", va="center",
                    bbox=dict(fc="white", ec="none", pad=0.5))

    blue, green, orange, grey, red = "#dbe9f6", "#dff0d8", "#fbe5cc", "#eeeeee", "#f6dada"
    box("y", 0.9, 0.7, "$y_{t-1}$\n(previous token)", grey)
    box("emb", 0.9, 1.9, "embedding\n$\\mathrm{emb}(y_{t-1})$  (B, E)", blue)
    box("feed", 3.0, 0.7, "$\\tilde h_{t-1}$  (B, H)\nfrom step t-1", red)
    box("cat", 1.8, 3.1, "$x_t = [\\mathrm{emb}(y_{t-1});\\ \\tilde h_{t-1}]$\n(B, E + H)", blue,
        w=2.4)
    box("state", 4.4, 4.9, "state $(h_{t-1}, c_{t-1})$", grey, w=2.0)
    box("lstm", 4.4, 3.1, "LSTM cell\n$h_t, c_t$  (B, H)", green, w=1.6)
    box("mem", 7.3, 4.9, "encoder outputs\nmemory (B, S, H)", grey, w=2.0)
    box("att", 7.3, 3.1, "attention\n$q = W_a h_t$,  $a = \\mathrm{softmax}(\\mathrm{memory}\\, q)$\n"
        "$\\mathrm{context}_t = a^\\top \\mathrm{memory}$", orange, w=2.9, h=0.95)
    box("comb", 7.0, 1.45, "$\\tilde h_t = \\tanh(W_c\\, [h_t;\\ \\mathrm{context}_t])$\n(B, H)",
        orange, w=2.7)
    box("gen", 9.9, 1.45, "generator\n$\\log\\,\\mathrm{softmax}(W_{out} \\tilde h_t + b)$", green,
        w=2.3)
    box("out", 9.9, 3.1, "$P(y_t \\mid y_{<t}, x)$\n(B, V)", grey)
    box("next", 9.9, 0.35, "$\\tilde h_t$ -> input of step t+1", red, w=2.1, h=0.45)

    arrow("y", "emb")
    arrow("emb", "cat")
    arrow("feed", "cat", "input feeding", offset=(0.45, 0.0))
    arrow("cat", "lstm")
    arrow("state", "lstm")
    arrow("lstm", "att", "$h_t$ (query)", offset=(0.0, 0.17))
    arrow("mem", "att", "keys = values")
    arrow("att", "comb", "$\\mathrm{context}_t$", offset=(0.45, 0.0))
    arrow("lstm", "comb", "$h_t$", rad=0.25, side=(0, -1), offset=(-0.2, -0.1))
    arrow("comb", "gen")
    arrow("gen", "out")
    arrow("comb", "next", color="#b03030", rad=0.3, side=(0, -1))
    ax.set_title("One decoder step t (Decoder.step in minis2s/models/decoder.py): input feeding puts "
                 "$\\tilde h_{t-1}$ into the INPUT, next to the embedding", fontsize=9.5)
    fig.tight_layout()
    return _save(fig, out / "decoder-step.png")


# ----------------------------------------------------------------------------- tf-curves
def draw_tf_curves(out: Path, tiny: bool = False) -> Path:
    """The reversal model of concepts.md section 12, trained with teacher forcing; every few
    steps its token accuracy on 200 held-out sentences fed the reference prefix
    (teacher-forced) and fed its own predictions (free-running, greedy)."""
    import grad
    from grad import optim
    from grad.tensor import no_grad
    from .data import collate
    from .metrics import token_accuracy
    from .models import Seq2Seq
    from .train import to_device
    plt = _plt()
    rng = np.random.default_rng(0)

    def pairs(n):
        src_ids, tgt_ids = [], []
        for _ in range(n):
            seq = [int(v) for v in rng.integers(4, 10, size=rng.integers(3, 8))]
            src_ids.append(seq + [2])
            tgt_ids.append([1] + seq[::-1] + [2])
        return src_ids, tgt_ids

    model = Seq2Seq(10, 10, emb_size=16, hidden_size=32, num_layers=1, dropout=0.0,
                    generator=grad.Generator(0))
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    test_src, test_tgt = pairs(60 if tiny else 200)
    test = collate(test_src, test_tgt, list(range(len(test_src))))
    refs = [t[1:] for t in test_tgt]
    total, every = (10, 5) if tiny else (200, 5)
    steps, forced, free = [], [], []
    for step in range(total + 1):
        if step % every == 0:
            with no_grad():
                s, sl, t_in, _ = to_device(test)
                f = model.logits(s, sl, t_in).numpy().argmax(axis=-1)
                g = model.greedy(test.src, test.src_lengths, max_len=10).tokens
            steps.append(step)
            forced.append(token_accuracy(list(f), refs))
            free.append(token_accuracy(list(g), refs))
        if step < total:
            batch = collate(*pairs(32), list(range(32)))
            loss = model.loss(*to_device(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.plot(steps, forced, marker="o", ms=3, label="teacher-forced (fed the reference prefix)")
    ax.plot(steps, free, marker="s", ms=3, label="free-running (fed its own greedy output)")
    ax.fill_between(steps, free, forced, color="0.85", label="the gap: exposure bias")
    ax.set_xlabel("training step (batches of 32, teacher forcing)")
    ax.set_ylabel("token accuracy, held-out")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Reversing sequences (concepts.md section 12): the same model, two ways of feeding it",
                 fontsize=9.5)
    fig.tight_layout()
    return _save(fig, out / "tf-vs-free-running.png")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


DRAW = {"entropy": draw_entropy, "lm-order": draw_lm_order, "decoder-step": draw_decoder_step,
        "tf-curves": draw_tf_curves}
assert tuple(DRAW) == FIGURES
