"""The experiments a researcher runs every day, on top of the forward pass:
next-token loss and TransformerLens's ``test_prompt``. (Copying a model and
ablating heads are :meth:`Model.copy` and ``Model.forward(ablate=...)``.)"""

import math
import sys
from typing import List, NamedTuple, Tuple

from . import arrays
from .arrays import numpy


def cross_entropy(out, batch) -> List[List[float]]:
    """Per-token next-token cross-entropy, in double: for each prompt b and
    position t < n − 1, logsumexp(logits[b, t]) − logits[b, t, tokens[b, t + 1]].
    ``out``: the forward pass's OutArray [B, n, V]."""
    B, n = batch.shape
    V = out.shape[2]
    ids = batch.ids.tolist()
    if numpy is not None:
        logits = out.array.astype(numpy.float64)
        top = logits.max(axis=2, keepdims=True)
        lse = (numpy.log(numpy.exp(logits - top).sum(axis=2)) + top[..., 0])[:, :-1]
        nxt = numpy.array(ids, dtype=numpy.int64).reshape(B, n)[:, 1:]
        picked = numpy.take_along_axis(logits[:, :-1, :], nxt[..., None], axis=2)[..., 0]
        return (lse - picked).tolist()
    flat = out.array
    losses = []
    for b in range(B):
        row = []
        for t in range(n - 1):
            base = (b * n + t) * V
            logit = flat[base:base + V]
            top = max(logit)
            lse = top + math.log(sum(math.exp(x - top) for x in logit))
            row.append(lse - logit[ids[b * n + t + 1]])
        losses.append(row)
    return losses


class PromptTest(NamedTuple):
    """What :func:`test_prompt` found at the prompt's last position."""
    tokens: List[str]               #: the prompt's tokens, as strings
    answer: int                     #: the answer's token id
    rank: int                       #: its rank among all logits (0: the top prediction)
    logit: float                    #: its logit
    prob: float                     #: its probability (softmax in double)
    top: List[Tuple[int, str, float, float]]  #: (id, string, logit, probability), best first


def test_prompt(prompt, answer, model, top_k=10, prepend_bos=False, print_details=True,
                file=None) -> PromptTest:
    """TransformerLens's ``utils.test_prompt(prompt, answer, model)``: the
    answer's rank, logit and probability after ``prompt`` and the ``top_k``
    predictions there, printed (``print_details``) to ``file`` (stdout)."""
    answer_id = model._one_token(answer)
    batch = model._token_batch(prompt, prepend_bos, "prompt")
    if batch.batched:
        raise ValueError("test_prompt takes one prompt, not a batch")
    ids = batch.ids.tolist()
    logits = model._run(batch)[0]
    V = logits.shape[2]
    n = len(ids)
    last = list(logits.array[(n - 1) * V:n * V]) if numpy is None else \
        [float(x) for x in logits.array[0, n - 1]]
    top = max(last)
    total = sum(math.exp(x - top) for x in last)
    prob = [math.exp(x - top) / total for x in last]
    order = sorted(range(V), key=lambda j: (-last[j], j))
    rank = order.index(answer_id)
    k = arrays.size(top_k, "top_k")
    best = [(j, model.token_str(j), last[j], prob[j]) for j in order[:k]]
    strings = [model.token_str(t) for t in ids]
    result = PromptTest(strings, answer_id, rank, last[answer_id], prob[answer_id], best)
    if print_details:
        out = file or sys.stdout
        print(f"Tokenized prompt: {strings}", file=out)
        print(f"Tokenized answer: {[model.token_str(answer_id)]}", file=out)
        print(f"Performance on answer token:\nRank: {rank:<8} Logit: {last[answer_id]:5.2f} "
              f"Prob: {100 * prob[answer_id]:6.2f}% Token: |{model.token_str(answer_id)}|",
              file=out)
        for i, (j, text, logit, p) in enumerate(best):
            print(f"Top {i}th token. Logit: {logit:5.2f} Prob: {100 * p:6.2f}% "
                  f"Token: |{text}|", file=out)
    return result
