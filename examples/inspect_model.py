#!/usr/bin/env python3
"""A short tour of libmi from Python on the shipped 1-layer model:

    PYTHONPATH=bindings/python MI_LIBRARY=build/lib/libmi.so.0 \
        python3 examples/inspect_model.py [DESTINATION_TOKEN]

loads the model, prints the head report, then for one destination token
(default "in") the source tokens each head attends to most from it (its QK
circuit, biases included) and what that head then predicts (its OV circuit):
the skip-trigrams "source ... destination -> output". (Not named inspect.py:
that would shadow the standard module for every script in this folder.)"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))

import mi


def main(destination):
    path = os.path.join(HERE, "models", "skip-trigram-1l", "model.safetensors")
    with mi.Model.load(path) as model:  # LayerNorm folded, vocab.txt beside it
        c = model.config
        print(f"{path}: {c['n_layers']} layer, {c['n_heads']} heads, d_model {c['d_model']}, "
              f"{c['d_vocab']} tokens")
        print("\nhead  OV copying  QK same-token  prev-token attn")
        for r in model.head_report(behaviour_half_length=8):
            print(f"L{r.layer}H{r.head}  {r.ov.copying_score:+10.3f}  {r.qk.copying_score:+13.3f}"
                  f"  {r.prev_token_attention:15.3f}")
        dst = model.token_id(destination)
        print(f"\nskip-trigrams into {destination!r}, by head: source (QK score) -> top outputs")
        for head in range(c["n_heads"]):
            with model.qk(0, head) as qk, model.ov(0, head) as ov:
                sources, scores = qk.topk(3, start=dst, stop=dst + 1)  # row dst: best keys
                outputs, _ = ov.topk(3)  # every source token's 3 best logits
                for src, score in zip(list(sources[0]), list(scores[0])):
                    words = ", ".join(model.token_str(int(o)) for o in list(outputs[int(src)]))
                    print(f"  L0H{head}  {model.token_str(int(src)):>8} ({float(score):5.2f})"
                          f" ... {destination} -> {words}")
        print("\ncopying: top-1 / top-5 share of tokens whose OV row ranks the token itself first")
        for head in range(c["n_heads"]):
            with model.ov(0, head) as ov:
                top1, top5 = ov.copying_accuracy()
                print(f"  L0H{head}  eigenvalue score {ov.copying_score():+.3f}  "
                      f"top-1 {top1:.2f}  top-5 {top5:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "in")
