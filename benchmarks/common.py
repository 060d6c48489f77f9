"""Shared pieces of the benchmarks: the fixed configurations, the random data, the same model
written in PyTorch (the reference), worker subprocesses and memory readings.

The reference workload (docs/performance.md): a bidirectional LSTM encoder (hidden/2 per
direction, per-layer final states concatenated to start the decoder), an L-layer LSTM decoder
with input feeding, Luong general attention with PAD masking, ``h~ = tanh(W_c [h; context])``,
a generator over the target vocabulary, NLL over non-PAD targets, backward, global-norm
clipping at 5 and one Adam step. No dropout, so both frameworks compute the same numbers.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # the repository's grad/ and minis2s/, not an older install
    sys.path.insert(0, str(ROOT))
PAD, BOS, EOS = 0, 1, 2

CONFIGS = {   # V: vocabulary (source and target), E: embedding, H: hidden, L: layers, B: batch
    "tiny": dict(V=100, E=32, H=64, L=1, B=32, S=12, T=12),
    "small": dict(V=1000, E=128, H=256, L=2, B=64, S=30, T=30),
    "medium": dict(V=8000, E=256, H=512, L=2, B=64, S=40, T=40),
}


# ----------------------------------------------------------------------------- data
def make_batches(cfg: dict, n_batches: int = 4, seed: int = 0) -> list[dict]:
    """Random token batches with varied lengths (each row between half and all of S or T; the
    longest row of every batch is full length). Host NumPy arrays, the same in every process."""
    rng = np.random.default_rng(seed)
    b, s, t, v = cfg["B"], cfg["S"], cfg["T"], cfg["V"]
    out = []
    for _ in range(n_batches):
        src_len = rng.integers(max(1, s // 2), s + 1, size=b)
        tgt_len = rng.integers(max(2, t // 2), t + 1, size=b)      # BOS/EOS included
        src_len[0], tgt_len[0] = s, t
        src = np.zeros((b, s), dtype=np.int64)
        tgt_in = np.zeros((b, t - 1), dtype=np.int64)
        tgt_out = np.zeros((b, t - 1), dtype=np.int64)
        for r in range(b):
            n = int(src_len[r])
            src[r, :n - 1] = rng.integers(4, v, size=n - 1)
            src[r, n - 1] = EOS
            body = rng.integers(4, v, size=int(tgt_len[r]) - 2)
            full = np.concatenate([[BOS], body, [EOS]])              # (len,)
            tgt_in[r, :len(full) - 1] = full[:-1]
            tgt_out[r, :len(full) - 1] = full[1:]
        out.append(dict(src=src, src_lengths=src_len.astype(np.int64), tgt_in=tgt_in,
                        tgt_out=tgt_out, n_tokens=int((tgt_out != PAD).sum())))
    return out


# ----------------------------------------------------------------------------- minis2s side
def build_minis2s(cfg: dict, seed: int = 0):
    import grad
    from minis2s.models import Seq2Seq
    return Seq2Seq(cfg["V"], cfg["V"], emb_size=cfg["E"], hidden_size=cfg["H"],
                   num_layers=cfg["L"], dropout=0.0, generator=grad.Generator(seed))


def save_weights(model, path: str) -> None:
    """The model's weights as a plain ``.npz`` (no pickle), read by the PyTorch worker."""
    from grad import backend as B
    np.savez(path, **{k: B.to_numpy(v) for k, v in model.state_dict().items()})


# ----------------------------------------------------------------------------- PyTorch side
def torch_model(cfg: dict, weights: str | None = None, device: str = "cpu"):
    """The reference model in idiomatic PyTorch eager code (packed sequences in the encoder,
    one ``LSTMCell`` per decoder layer), optionally with minis2s's weights copied in."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    v, e, h, n_layers = cfg["V"], cfg["E"], cfg["H"], cfg["L"]

    class TorchSeq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_emb = nn.Embedding(v, e, padding_idx=PAD)
            self.encoder = nn.LSTM(e, h // 2, n_layers, batch_first=True, bidirectional=True)
            self.tgt_emb = nn.Embedding(v, e, padding_idx=PAD)
            self.cells = nn.ModuleList([nn.LSTMCell(e + h if k == 0 else h, h)
                                        for k in range(n_layers)])
            self.query = nn.Linear(h, h, bias=False)
            self.combine = nn.Linear(2 * h, h, bias=False)
            self.generator = nn.Linear(h, v)

        def encode(self, src, src_lengths):
            batch = src.shape[0]
            packed = pack_padded_sequence(self.src_emb(src), src_lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            out, (h_n, c_n) = self.encoder(packed)
            memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])

            def merge(state):                     # (2L, B, H/2) -> (L, B, H), [forward | reverse]
                return state.view(n_layers, 2, batch, h // 2).permute(0, 2, 1, 3).reshape(
                    n_layers, batch, h)
            hs, cs = merge(h_n), merge(c_n)
            return memory, src == PAD, [(hs[k], cs[k]) for k in range(n_layers)]

        def step(self, emb_t, feed, states, memory, pad_mask):
            x = torch.cat([emb_t, feed], dim=1)                       # input feeding
            new_states = []
            for k, cell in enumerate(self.cells):
                hk, ck = cell(x, states[k])
                new_states.append((hk, ck))
                x = hk
            q = self.query(x)                                          # (B, H)
            scores = torch.bmm(q.unsqueeze(1), memory.transpose(1, 2)).squeeze(1)  # (B, S)
            weights = torch.softmax(scores.masked_fill(pad_mask, float("-inf")), dim=-1)
            context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, H)
            h_tilde = torch.tanh(self.combine(torch.cat([x, context], dim=1)))
            return h_tilde, new_states

        def loss(self, src, src_lengths, tgt_in, tgt_out):
            memory, pad_mask, states = self.encode(src, src_lengths)
            emb = self.tgt_emb(tgt_in)                                 # (B, T, E)
            feed = memory.new_zeros(src.shape[0], h)
            outs = []
            for t in range(tgt_in.shape[1]):
                feed, states = self.step(emb[:, t], feed, states, memory, pad_mask)
                outs.append(feed)
            logits = self.generator(torch.stack(outs, dim=1))          # (B, T, V), one GEMM
            return F.cross_entropy(logits.reshape(-1, v), tgt_out.reshape(-1), ignore_index=PAD)

        @torch.no_grad()
        def greedy(self, src, src_lengths, max_len):
            memory, pad_mask, states = self.encode(src, src_lengths)
            batch = src.shape[0]
            y = torch.full((batch,), BOS, dtype=torch.long, device=src.device)
            feed = memory.new_zeros(batch, h)
            done = torch.zeros(batch, dtype=torch.bool, device=src.device)
            tokens = []
            for _ in range(max_len):
                feed, states = self.step(self.tgt_emb(y), feed, states, memory, pad_mask)
                logits = self.generator(feed)
                logits[:, [PAD, BOS]] = float("-inf")                  # never produced
                y = logits.argmax(dim=-1)
                y = y.masked_fill(done, PAD)
                tokens.append(y)
                done = done | (y == EOS)
                if bool(done.all()):
                    break
            return torch.stack(tokens, dim=1)

    model = TorchSeq2Seq()
    if weights is not None:
        load_minis2s_weights(model, np.load(weights, allow_pickle=False), n_layers)
    return model.to(device)


def load_minis2s_weights(model, weights, n_layers: int) -> None:
    """Copy minis2s's parameters (``weights[name]``: arrays or tensors under minis2s's names,
    e.g. an ``.npz`` or a safetensors file) into ``torch_model``'s model."""
    import torch
    mapping = {"src_emb.weight": "encoder.embedding.weight",
               "tgt_emb.weight": "decoder.embedding.weight",
               "query.weight": "decoder.attention.query.weight",
               "combine.weight": "decoder.attention.combine.weight",
               "generator.weight": "decoder.output_layer.weight",
               "generator.bias": "decoder.output_layer.bias"}
    for name, _ in model.encoder.named_parameters():
        mapping[f"encoder.{name}"] = f"encoder.rnn.{name}"
    for k in range(n_layers):
        for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mapping[f"cells.{k}.{part}"] = f"decoder.rnn.{part}_l{k}"
    state = {ours: torch.as_tensor(np.ascontiguousarray(weights[theirs]))
             if not isinstance(weights[theirs], torch.Tensor) else weights[theirs]
             for ours, theirs in mapping.items()}
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- one training step
def minis2s_batches(cfg: dict) -> list[tuple]:
    """``make_batches(cfg)`` as minis2s tensors: (src, src_lengths, tgt_in, tgt_out)."""
    from grad import backend as B
    from grad.tensor import Tensor
    return [(Tensor(B.from_numpy(d["src"])), B.from_numpy(d["src_lengths"]),
             Tensor(B.from_numpy(d["tgt_in"])), Tensor(B.from_numpy(d["tgt_out"])))
            for d in make_batches(cfg)]


def minis2s_step(model, params, optimizer, batch):
    """One minis2s training step (loss, backward, clip at 5, optimizer step); returns the loss."""
    from grad.nn.utils import clip_grad_norm_
    loss = model.loss(*batch)
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm_(params, 5.0)
    optimizer.step()
    return loss


def fused_entered(fn) -> list[str]:
    """Run ``fn()`` and return the names of the fused fast functions it entered
    (``grad.modes.fused_functions()``, in their registry order), traced with ``sys.setprofile``."""
    from grad.modes import fused_functions
    names = {f.__code__: f.__name__ for f in fused_functions()}
    entered = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in names:
            entered.add(names[frame.f_code])
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return [f.__name__ for f in fused_functions() if f.__name__ in entered]


def torch_batches(cfg: dict, device: str = "cpu") -> list[tuple]:
    import torch
    return [tuple(torch.from_numpy(d[k]).to(device) for k in ("src", "src_lengths", "tgt_in", "tgt_out"))
            for d in make_batches(cfg)]


def torch_step(model, optimizer, batch):
    """The same step in PyTorch, written as its users write it; returns the loss."""
    import torch
    loss = model.loss(*batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss


# ----------------------------------------------------------------------------- processes
# Variables that change how a framework threads or waits (OpenMP, MKL, OpenBLAS thread counts,
# wait policies, spin counts). A worker runs with none of them: each framework as its users run
# it, at its defaults, with only its thread count set by its own call (``torch.set_num_threads``;
# ``grad.backend.set_num_threads`` through threadpoolctl for NumPy's BLAS). The BLAS *kernel*
# choice (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) is left as the machine has it.
THREADING_VARIABLES = re.compile(r"^(OMP_|GOMP_|KMP_|MKL_|OPENBLAS_NUM_THREADS|OPENBLAS_MAIN_FREE|"
                                 r"GOTO_NUM_THREADS|BLIS_NUM_THREADS|VECLIB_MAXIMUM_THREADS|"
                                 r"NUMEXPR_|TORCH_|ATEN_)")


# threadpoolctl sets this one on import: it lets two OpenMP runtimes load in one process and
# changes no thread count or wait policy, so it is no handicap to either side.
NOT_THREADING = {"KMP_DUPLICATE_LIB_OK"}
START_ENV = dict(os.environ)      # this process's environment before any library could add to it


def worker_env() -> dict:
    """The environment of a worker: this one without any threading or wait-policy variable."""
    env = {k: v for k, v in os.environ.items() if not THREADING_VARIABLES.match(k)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def set_threads(framework: str, threads: int) -> None:
    """The one threading setting of a worker, by the framework's own call."""
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        from grad import backend
        backend.set_num_threads(threads)


def describe_process() -> dict:
    """What a running worker really has: threading variables in its environment (there must be
    none), its BLAS libraries' thread counts and kernels (threadpoolctl), PyTorch's intra- and
    inter-op thread counts where PyTorch is loaded."""
    from threadpoolctl import threadpool_info
    info = {"threading_env": {k: v for k, v in os.environ.items()
                              if THREADING_VARIABLES.match(k) and k not in NOT_THREADING},
            "threading_env_at_start": {k: v for k, v in START_ENV.items() if THREADING_VARIABLES.match(k)},
            "blas": [{"library": i.get("internal_api"), "kernel": i.get("architecture"),
                      "threads": i.get("num_threads"), "path": i.get("filepath")}
                     for i in threadpool_info() if i.get("user_api") == "blas"]}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    return info


class Worker:
    """A benchmark worker in its own process, driven by JSON lines over its stdin/stdout."""

    def __init__(self, script: str, framework: str, args: list[str], threads: int):
        self.framework = framework
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", framework, "--worker-threads", str(threads), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=worker_env())
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.framework} worker exited with code {self.proc.wait()}")
        return json.loads(line)

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def add_worker_arguments(parser) -> None:
    """The hidden options by which a benchmark script runs itself as a worker."""
    import argparse
    parser.add_argument("--worker", choices=["minis2s", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)


def run_worker(args, minis2s_worker, torch_worker) -> bool:
    """If ``args`` ask for a worker, run it (until its stdin closes) and return True."""
    if args.worker is None:
        return False
    if args.worker == "torch":
        import torch  # noqa: F401  (loaded before its threads are set)
    set_threads(args.worker, args.worker_threads)
    (minis2s_worker if args.worker == "minis2s" else torch_worker)(args)
    return True


def serve(handlers: dict, hello: dict) -> None:
    """The worker's side: answer each request line with one JSON line until stdin closes."""
    out = sys.stdout
    sys.stdout = sys.stderr                     # stray prints must not break the protocol
    out.write(json.dumps(hello) + "\n")
    out.flush()
    handlers = {"describe": describe_process, **handlers}
    for line in sys.stdin:
        request = json.loads(line)
        reply = handlers[request.pop("cmd")](**request)
        out.write(json.dumps(reply) + "\n")
        out.flush()


def set_allocator(policy: str) -> str:
    """Apply the host allocator policy in this process: "tuned" is
    ``grad.backend.tune_host_allocator()`` (the same call for either framework), "default"
    leaves the C library alone. Returns what is in force."""
    if policy == "default":
        return "default"
    from grad import backend
    return "tuned" if backend.tune_host_allocator() else "default (tuning unavailable)"


def memory_mb() -> dict:
    """Resident memory now and its peak so far (MiB), from /proc (Linux)."""
    fields = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024.0
    except OSError:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        fields = {"VmRSS": peak, "VmHWM": peak}
    return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}


def blas_info() -> str:
    """Which BLAS NumPy runs and with how many threads (via threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return (f"numpy {np.__version__}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
                "(install threadpoolctl to see the BLAS kernel)")
    parts = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} "
             f"threads={i.get('num_threads')}" for i in threadpool_info() if i.get("user_api") == "blas"]
    return f"numpy {np.__version__}; " + "; ".join(parts)


def median_seconds(fn, repeat: int, warmup: int = 1) -> float:
    """The median wall time of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    import statistics
    import time
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ----------------------------------------------------------------------------- Transformer workload
# ``train_step.py --arch transformer``: minis2s's ``TransformerSeq2Seq`` (post-norm layers, final
# LayerNorm after each stack, embeddings * sqrt(d) + sinusoidal positions, a Linear generator)
# against the same model assembled from ``torch.nn.TransformerEncoderLayer`` /
# ``TransformerDecoderLayer``. Same batches (``make_batches``), same loss (token-mean NLL over
# non-PAD targets), same step (``minis2s_step`` / ``torch_step``: clip at 5, Adam), no dropout.
TRANSFORMER_CONFIGS = {  # D: d_model, NH: heads, F: feed-forward, L: layers per stack (3 = 3+3)
    "tiny": dict(V=100, D=32, NH=2, F=64, L=1, B=8, S=10, T=10),
    "base": dict(V=8000, D=256, NH=4, F=1024, L=3, B=64, S=30, T=30),   # issue 20's configuration
}


def build_minis2s_transformer(cfg: dict, seed: int = 0):
    import grad
    from minis2s.models.transformer import TransformerSeq2Seq
    return TransformerSeq2Seq(cfg["V"], cfg["V"], d_model=cfg["D"], nhead=cfg["NH"],
                              num_encoder_layers=cfg["L"], num_decoder_layers=cfg["L"],
                              dim_feedforward=cfg["F"], dropout=0.0, generator=grad.Generator(seed))


def _loaded(model, weights: str | None, device: str):
    """A PyTorch model with minis2s's saved weights (``.npz``, same parameter names) on ``device``."""
    import torch
    if weights is not None:
        state = np.load(weights, allow_pickle=False)
        model.load_state_dict({k: torch.as_tensor(np.ascontiguousarray(state[k]))
                               for k in model.state_dict()}, strict=True)
    return model.to(device)


def torch_transformer(cfg: dict, weights: str | None = None, device: str = "cpu"):
    """The Transformer reference in PyTorch: ``nn.TransformerEncoder`` / ``TransformerDecoder``
    of PyTorch's own layers with final LayerNorms (as ``nn.Transformer`` builds them), at their
    defaults (post-norm, ReLU, eps 1e-5) except ``batch_first`` and dropout 0. Its parameter
    names are minis2s's, so minis2s's weights load as they are."""
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    v, d, n_heads, ff, n_layers = cfg["V"], cfg["D"], cfg["NH"], cfg["F"], cfg["L"]

    def positions(n: int) -> torch.Tensor:      # PE[pos, 2i] = sin(pos w_i), PE[pos, 2i+1] = cos(pos w_i)
        pos = torch.arange(n, dtype=torch.float32)[:, None]            # (P, 1)
        col = torch.arange(d)
        freq = torch.exp((col - col % 2).float() * (-math.log(10000.0) / d))   # (d,)
        angle = pos * freq[None, :]                                    # (P, d)
        return torch.where(col % 2 == 0, torch.sin(angle), torch.cos(angle))

    class TorchTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embedding = nn.Embedding(v, d, padding_idx=PAD)
            self.tgt_embedding = nn.Embedding(v, d, padding_idx=PAD)
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, n_heads, ff, dropout=0.0, batch_first=True),
                n_layers, norm=nn.LayerNorm(d))
            self.decoder = nn.TransformerDecoder(
                nn.TransformerDecoderLayer(d, n_heads, ff, dropout=0.0, batch_first=True),
                n_layers, norm=nn.LayerNorm(d))
            self.output_layer = nn.Linear(d, v)

        def embed(self, embedding, ids):
            return embedding(ids) * math.sqrt(d) + positions(ids.shape[1]).to(ids.device)

        def loss(self, src, src_lengths, tgt_in, tgt_out):
            pad_mask = src == PAD                                          # (B, S), True at PAD
            memory = self.encoder(self.embed(self.src_embedding, src), src_key_padding_mask=pad_mask)
            causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
            x = self.decoder(self.embed(self.tgt_embedding, tgt_in), memory, tgt_mask=causal,
                             tgt_is_causal=True, memory_key_padding_mask=pad_mask)   # (B, T, d)
            logits = self.output_layer(x)                                  # (B, T, V)
            return F.cross_entropy(logits.reshape(-1, v), tgt_out.reshape(-1), ignore_index=PAD)

    return _loaded(TorchTransformer(), weights, device)


# ----------------------------------------------------------------------------- LSTM language model
# ``train_step.py --arch lm``: the LSTM language model ``minis2s lm train`` trains
# (``minis2s.lm.lstm_lm.LSTMLanguageModel``: embedding -> L-layer LSTM -> linear generator) and
# its real training step (``minis2s.lm.training.train_step``), against the same model in
# PyTorch (``nn.Embedding``, ``nn.LSTM``, ``nn.Linear``, ``F.cross_entropy``). Both: loss per
# predicted token (PAD excluded), clip at 5, Adam (lr 1e-3, betas (0.9, 0.999), eps 1e-8), no
# dropout. T counts BOS and EOS (as the seq2seq target), so the LSTM reads T-1 positions.
LM_CONFIGS = {   # V: vocabulary, E: embedding, H: hidden, L: layers, B: sentences, T: longest
    "tiny": dict(V=100, E=32, H=64, L=2, B=16, T=12),
    "small": dict(V=1000, E=128, H=256, L=2, B=64, T=30),
    "medium": dict(V=8000, E=256, H=512, L=2, B=64, T=40),
}
LM_LR = 1e-3


def make_lm_batches(cfg: dict, n_batches: int = 4, seed: int = 0) -> list[dict]:
    """Random sentences ``BOS w_1 ... w_n EOS`` (between half and all of T tokens long; the
    first row of every batch is full length), padded with PAD: ``ids`` ``(B, T)`` int64 and
    ``lengths`` ``(B,)`` (BOS and EOS counted), as ``minis2s.lm.lstm_lm.pad_batch`` gives them.
    ``n_tokens``: the predicted tokens, ``sum(lengths - 1)``."""
    rng = np.random.default_rng(seed)
    b, t, v = cfg["B"], cfg["T"], cfg["V"]
    out = []
    for _ in range(n_batches):
        lengths = rng.integers(max(2, t // 2), t + 1, size=b)
        lengths[0] = t
        ids = np.full((b, t), PAD, dtype=np.int64)
        for r in range(b):
            n = int(lengths[r])
            ids[r, :n] = np.concatenate([[BOS], rng.integers(4, v, size=n - 2), [EOS]])
        out.append(dict(ids=ids, lengths=lengths.astype(np.int64),
                        n_tokens=int((lengths - 1).sum())))
    return out


def build_minis2s_lm(cfg: dict, seed: int = 0):
    """The LSTM LM as ``minis2s lm train`` builds it (``build_lstm_lm``), dropout 0, float32."""
    from minis2s.lm.training import build_lstm_lm
    return build_lstm_lm(dict(vocab_size=cfg["V"], emb_size=cfg["E"], hidden_size=cfg["H"],
                              num_layers=cfg["L"], dropout=0.0, pad_idx=PAD, tie_weights=False), seed)


def minis2s_lm_step(model, optimizer, batch) -> float:
    """One step of ``minis2s.lm.training.train_step`` on ``batch`` (a ``make_lm_batches`` item):
    clip at 5, and the summed loss divided by the batch's own predicted tokens, so the gradient
    is that of the mean over tokens (PyTorch's ``F.cross_entropy(ignore_index=PAD)``). Returns the
    loss per token."""
    from minis2s.lm.training import LMConfig, train_step
    cfg = LMConfig(max_grad_norm=5.0, dropout=0.0)
    return train_step(model, optimizer, (batch["ids"], batch["lengths"]), cfg,
                      scale=float(batch["n_tokens"]))["loss"]


def torch_lm(cfg: dict, weights: str | None = None, device: str = "cpu"):
    """The LSTM LM in idiomatic PyTorch: ``nn.Embedding`` -> ``nn.LSTM(batch_first=True)`` over
    the padded batch (every row runs all T-1 steps, as in minis2s, whose ``lengths`` only mask
    the padding) -> ``nn.Linear``, ``F.cross_entropy(ignore_index=PAD)``. Its parameter names
    are minis2s's (``embedding``, ``rnn``, ``output_layer``), so minis2s's weights load as
    they are."""
    from torch import nn
    from torch.nn import functional as F

    v, e, h, n_layers = cfg["V"], cfg["E"], cfg["H"], cfg["L"]

    class TorchLSTMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(v, e, padding_idx=PAD)
            self.rnn = nn.LSTM(e, h, n_layers, batch_first=True)
            self.output_layer = nn.Linear(h, v)

        def loss(self, ids):
            x_in, x_out = ids[:, :-1], ids[:, 1:]                     # (B, T-1) each
            out, _ = self.rnn(self.embedding(x_in))                   # (B, T-1, H)
            logits = self.output_layer(out)                           # (B, T-1, V)
            return F.cross_entropy(logits.reshape(-1, v), x_out.reshape(-1), ignore_index=PAD)

    return _loaded(TorchLSTMLM(), weights, device)


def torch_lm_step(model, optimizer, ids):
    """The LM step in PyTorch, as its users write it; returns the loss."""
    import torch
    loss = model.loss(ids)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss
