"""mi sweep over MPI against one process, and the projection to a cluster.

usage: python3 bench/bench_sweep.py MI_BINARY [ROUNDS] [D_VOCAB]

Writes a random GPT-2-sized model (d_model 768, d_head 64, 1 layer of 2
heads, d_vocab 50257 unless given), then in interleaved rounds (the machine
is shared: each round runs both ways back to back) times
  `mpirun -n 2 mi sweep --threads 1`   against   `mi sweep --threads 2`
and prints the medians and their ratio, the measured seconds per head and
per unit, and the projection for GPT-2 small / XL and a 128k vocabulary.
Not part of the default test run.
"""
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

MI = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
V = int(sys.argv[3]) if len(sys.argv) > 3 else 50257
D, DH, H = 768, 64, 2
MPIRUN = shutil.which("mpirun")


def write_model(path):
    rng = random.Random(1)
    blob_parts, header, off = [], {"__metadata__": {"n_head": str(H)}}, 0
    def add(name, shape):
        nonlocal off
        n = 1
        for s in shape:
            n *= s
        b = struct.pack(f"<{n}f", *(rng.gauss(0, 0.05) for _ in range(n)))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
        blob_parts.append(b)
        off += len(b)
    add("wte.weight", [V, D])
    add("wpe.weight", [8, D])
    add("h.0.attn.c_attn.weight", [D, 3 * D])
    add("h.0.attn.c_proj.weight", [D, D])
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blob_parts))


def timed(cmd):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}")
    return time.monotonic() - t, [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


def main():
    tmp = tempfile.mkdtemp(prefix="bench-sweep-")
    model = os.path.join(tmp, "m.safetensors")
    write_model(model)
    base = [MI, "sweep", model, "--heads", "L0", "--json"]
    one, two, unit_s = [], [], []
    for r in range(ROUNDS):
        t, ev = timed(base + ["-o", os.path.join(tmp, "a.st"), "--threads", "2"])
        one.append(t)
        unit_s += [e["seconds"] for e in ev if e["event"] == "unit"]
        size = ev[-1]["bytes"]
        units = ev[-1]["units"]
        if MPIRUN:
            t, _ = timed([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", "2"] + base +
                         ["-o", os.path.join(tmp, "b.st"), "--threads", "1"])
            two.append(t)
            same = open(os.path.join(tmp, "a.st"), "rb").read() == open(os.path.join(tmp, "b.st"), "rb").read()
            print(f"round {r}: 1 process x 2 threads {one[-1]:.2f} s, 2 ranks x 1 thread "
                  f"{two[-1]:.2f} s, files identical: {same}", flush=True)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    m1 = statistics.median(one)
    print(f"CPU: {name}; d_vocab {V}, d_model {D}, d_head {DH}, {H} heads ({2 * H} circuits, {units} units)")
    print(f"median wall: mi sweep --threads 2 {m1:.2f} s", end="")
    if two:
        m2 = statistics.median(two)
        print(f"; mpirun -n 2 --threads 1 {m2:.2f} s; ratio {m2 / m1:.3f}")
    else:
        print("; no mpirun")
    per_head = m1 / H  # seconds of this machine (2 threads) per head, OV + QK
    per_unit = statistics.median(unit_s)
    flop_head = 2 * 2 * V * V * DH  # two d_vocab^2 circuits, inner dimension d_head
    rate = flop_head / per_head
    print(f"per head (OV + QK): {per_head:.2f} s, {flop_head / 1e12:.2f} Tflop of GEMM, "
          f"{rate / 1e9:.0f} Gflop/s of GEMM-equivalent throughput; median unit {per_unit:.2f} s")
    result_head = size / H
    for label, v, heads, dh in (("GPT-2 small", 50257, 144, 64), ("GPT-2 XL", 50257, 1200, 64),
                                ("128k vocab, 1024 heads", 128000, 1024, 128)):
        f = 2 * 2 * v * v * dh * heads
        secs = f / rate
        bytes_ = result_head * heads * v / V
        print(f"{label}: {f:.2e} flop, {secs / 3600:.1f} h on this machine; "
              f"16 nodes of this machine: {secs / 16 / 3600:.2f} h; results {bytes_ / 1e9:.1f} GB")
    # Communication: a fetch-and-add per unit (~10 us) and the unit file
    # (its share of the result) over a 10 Gbit/s shared filesystem.
    unit_bytes = size / units
    comm = 1e-5 + unit_bytes / 1.25e9
    print(f"communication per unit: {unit_bytes / 1e6:.2f} MB at 1.25 GB/s + 10 us counter = "
          f"{comm * 1e3:.1f} ms against {per_unit:.2f} s of work: {100 * comm / (comm + per_unit):.2f} %")
    shutil.rmtree(tmp)


main()
