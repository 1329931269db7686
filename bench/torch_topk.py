"""torch's strongest way to the top-k of each row of a factored circuit A·B:
rows in blocks into one reused buffer (torch.matmul(..., out=)), then
torch.topk of the block. Prints the best seconds of `--repeat` runs.

    /usr/bin/python3 bench/torch_topk.py --rows N --cols M --rank R --k K --threads T

Run by bench_circuits beside libmi, one run a round (never by the tests).
"""
import argparse
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--cols", type=int, required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(a.rows, a.rank, generator=g)
    B = torch.randn(a.rank, a.cols, generator=g)
    out = torch.empty(a.block, a.cols)
    vals = torch.empty(a.block, a.k)
    idx = torch.empty(a.block, a.k, dtype=torch.long)
    best = float("inf")
    for _ in range(a.repeat):
        t = time.perf_counter()
        for i in range(0, a.rows, a.block):
            n = min(a.block, a.rows - i)
            torch.matmul(A[i:i + n], B, out=out[:n])
            torch.topk(out[:n], a.k, dim=1, out=(vals[:n], idx[:n]))
        best = min(best, time.perf_counter() - t)
    print(f"{best:.6f}")


if __name__ == "__main__":
    main()
