"""Speed and peak memory of the paper's front end: Harris responses and the raw-input encoders.

Rows:
- `harris2d` / `harris3d`: response + key points + attention volume, per clip of one word span
  (F x S x S grey frames), timed on a batch of spans and divided by the batch size;
- `harris3d_cnn attention=...` and `spectro_cnn`: encoder forward + backward (+ the attention,
  computed inside the forward) per batch of word spans.

Each row runs in its own process so its peak memory (max RSS on CPU, max allocated on CUDA) is its
own. Median of `--repeats` timed runs after one warm-up.

    python benchmarks/frontend_speed.py                       # CPU, 1 thread
    python benchmarks/frontend_speed.py --device cuda          # where a GPU is available
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

ROWS = [
    "harris2d",
    "harris3d",
    "harris3d_cnn:none",
    "harris3d_cnn:harris2d",
    "harris3d_cnn:harris3d",
    "spectro_cnn",
]


def measure(row: str, batch: int, frames: int, size: int, repeats: int, device: str, threads: int) -> dict:
    import torch

    from emofuse.models.encoders import create_encoder
    from emofuse.models.encoders.harris import harris_analysis

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    video = torch.rand(batch, frames, size, size, device=device)
    mel = torch.randn(batch, 64, 50, device=device) * 20 - 50
    if row in ("harris2d", "harris3d"):
        def step() -> None:
            harris_analysis(video, row)
        per = "clip"
    else:
        name, _, attention = row.partition(":")
        encoder = create_encoder(name, 64, **({"attention": attention} if attention else {})).to(device)
        x = video if name == "harris3d_cnn" else mel

        def step() -> None:
            encoder(x).sum().backward()
        per = "batch"
    step()  # warm-up
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"row": row, "ms": ms / batch if per == "clip" else ms, "per": per, "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=ROWS)
    p.add_argument("--batch", type=int, default=64, help="word spans per batch")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one row in this process
    args = p.parse_args()
    if args.one:
        print(
            json.dumps(
                measure(args.one, args.batch, args.frames, args.size, args.repeats, args.device, args.threads)
            )
        )
        return
    print(
        f"device {args.device}, {args.threads} thread(s); spans of {args.frames} x {args.size} x {args.size} "
        f"frames, batch {args.batch}; log-mel 64 x 50; median of {args.repeats}"
    )
    print("| row | time | per | peak memory MiB |")
    print("|---|---|---|---|")
    for row in args.rows:
        cmd = [sys.executable, __file__, "--one", row] + [
            a
            for k in ("batch", "frames", "size", "repeats", "device", "threads")
            for a in (f"--{k}", str(getattr(args, k)))
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"| {row} | failed: {done.stderr.strip().splitlines()[-1]} | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        label = "harris response + key points + attention" if r["per"] == "clip" else "forward + backward"
        print(f"| {row} | {r['ms']:.2f} ms ({label}) | {r['per']} | {r['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
