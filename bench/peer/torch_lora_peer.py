#!/usr/bin/python3
"""PyTorch CPU peer for peftkit's LoRA training benchmark (Debian: apt-get install python3-torch).

usage: torch_lora_peer.py CONFIG.json BATCH SEQ STEPS RANK [--threads N]

CONFIG.json is a Hugging Face LLaMA-family config.json; weights are random (seed 0). LoRA with
alpha/r = 2 sits on every linear layer of every block (q, k, v, o, gate, up, down), AdamW updates
only the LoRA tensors, and the loss is next-token cross-entropy: the same work as
`peftkit bench train --method lora --target all-linear`.

Without --threads the script runs itself once at 1 thread and once at every core this process may
use, and prints the faster run as one JSON line (with both runs under "runs"): which thread count
is faster depends on the machine and the shape, and the comparison should not handicap the peer.
With --threads N it runs once at N threads and prints that run: step_s is the median step time
over STEPS steps after one warm-up step, peak_rss_mb the process's peak resident memory.

Thread counts reach every pool PyTorch may use: OMP_NUM_THREADS, MKL_NUM_THREADS and
OPENBLAS_NUM_THREADS are set before torch is imported (the libraries read them when they load),
and torch.set_num_threads(N) after. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which some machines
set to tune OpenBLAS for another CPU, are removed so OpenBLAS detects this one.
"""
import json
import os
import subprocess
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def parse_args(argv):
    args = list(argv)
    threads = None
    if "--threads" in args:
        i = args.index("--threads")
        if i + 1 >= len(args):
            sys.exit("torch_lora_peer.py: --threads needs a number")
        threads = int(args[i + 1])
        if threads < 1:
            sys.exit(f"torch_lora_peer.py: --threads must be at least 1, got {threads}")
        del args[i:i + 2]
    if len(args) != 5:
        sys.exit(__doc__.strip().split("\n\n")[1])
    config, batch, seq, steps, rank = args
    return config, int(batch), int(seq), int(steps), int(rank), threads


def thread_sweep(argv):
    """Runs this script at 1 thread and at all usable cores, each in its own process; returns the faster run."""
    cores = len(os.sched_getaffinity(0))
    runs = []
    for n in sorted({1, cores}):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
        env.update({k: str(n) for k in THREAD_VARS})
        r = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--threads", str(n)],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            sys.exit(f"torch_lora_peer.py: the run at {n} thread(s) failed")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["step_s"])
    return {**best, "runs": [{"threads": run["threads"], "step_s": run["step_s"]} for run in runs]}


def one_run(config_path, batch, seq, steps, rank, threads):
    # Before torch is imported: OpenMP and OpenBLAS size their pools when they load.
    for k in BLAS_OVERRIDES:
        os.environ.pop(k, None)
    for k in THREAD_VARS:
        os.environ[k] = str(threads)
    import resource
    import time

    import torch

    from llama_lora import init_weights, llama_logits

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(config_path) as f:
        cfg = json.load(f)
    weights, lora = init_weights(cfg, rank)
    params = [t for pair in lora.values() for t in pair[:2]]
    opt = torch.optim.AdamW(params, lr=1e-4)
    vocab = cfg["vocab_size"]
    ids = torch.randint(0, vocab, (batch, seq + 1))
    times = []
    loss = None
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        logits = llama_logits(cfg, weights, lora, ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    timed = sorted(times[1:])
    step_s = timed[len(timed) // 2]
    return {
        "peer": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "step_s": step_s,
        "tokens_per_s": batch * seq / step_s,
        "loss": float(loss),
        # ru_maxrss is in kilobytes on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000.0,
    }


if __name__ == "__main__":
    config, batch, seq, steps, rank, threads = parse_args(sys.argv[1:])
    if threads is None:
        result = thread_sweep(sys.argv[1:])
    else:
        sys.dont_write_bytecode = True  # no __pycache__ left in the clone
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        result = one_run(config, batch, seq, steps, rank, threads)
    print(json.dumps(result))
