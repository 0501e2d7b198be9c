"""Time per training epoch and peak memory on MOSI-shaped data, per model.

MOSI shapes: 1284 training clips; aligned: 50 steps for every modality; unaligned: text 50,
audio 500, vision 375 steps; feature sizes text 768 / audio 5 / vision 20 (MMSA's pickles).
The data are random (only shapes matter for speed). Each (model, layout) runs in its own
process so peak memory (max RSS on CPU, max allocated on CUDA) is its own.

    python benchmarks/train_speed.py                    # all, CPU, 1 thread
    python benchmarks/train_speed.py --batches 10 --models fusion_matched ef_lstm
    python benchmarks/train_speed.py --device cuda
    python benchmarks/train_speed.py --models tfn lmf mfn mctn mult --adam fused

Against MMSA side by side (its own environment): benchmarks/vs_mmsa.py.

Epoch time is measured on `--batches` training steps (forward, backward, Adam) after one
warm-up step and scaled to the full epoch (1284 / batch size steps); the table says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MOSI = {"n": 1284, "dims": {"text": 768, "audio": 5, "vision": 20}}
LAYOUTS = {
    "aligned": {"text": 50, "audio": 50, "vision": 50},
    "unaligned": {"text": 50, "audio": 500, "vision": 375},
}
DEFAULT_MODELS = ["fusion_matched", "ef_lstm", "late_fusion", "tfn", "lmf", "mfn", "mctn", "mult"]


def measure(
    model_name: str,
    layout: str,
    batches: int,
    batch_size: int,
    device: str,
    threads: int,
    adam: str = "default",
) -> dict:
    import torch

    from emofuse.data.dataset import Batch
    from emofuse.models import ModelSpec, create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lengths = LAYOUTS[layout]
    spec = ModelSpec(("text", "audio", "vision"), MOSI["dims"], lengths)
    model = create_model(model_name, spec).to(device)
    kind = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[adam]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **kind)

    def batch() -> Batch:
        feats, masks = {}, {}
        for m, length in lengths.items():
            real = torch.randint(length // 3, length + 1, (batch_size,))
            masks[m] = torch.arange(length)[None] < real[:, None]
            feats[m] = torch.randn(batch_size, length, MOSI["dims"][m]) * masks[m].unsqueeze(-1)
        return Batch(feats, masks, torch.randn(batch_size), torch.arange(batch_size)).to(device)

    data = [batch() for _ in range(batches + 1)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step(b: Batch) -> None:
        out = model(b)
        loss = torch.nn.functional.l1_loss(out.prediction, b.labels)
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(data[0])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in data[1:]:
        step(b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / batches
    steps_per_epoch = -(-MOSI["n"] // batch_size)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "model": model_name,
        "layout": layout,
        "s_per_epoch": per_step * steps_per_epoch,
        "ms_per_step": per_step * 1000,
        "peak_mib": peak,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--adam", default="default", choices=["default", "foreach", "fused"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, layout = args.child.split(":")
        print(json.dumps(measure(model, layout, args.batches, args.batch_size, args.device, args.threads,
                                 args.adam)))
        return

    rows = []
    for layout in args.layouts:
        for model in args.models:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                f"{model}:{layout}",
                "--batches",
                str(args.batches),
                "--batch-size",
                str(args.batch_size),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--adam",
                args.adam,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"model": model, "layout": layout, "error": done.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    mem = "peak GPU MiB (allocated)" if args.device.startswith("cuda") else "peak RSS MiB (process)"
    print(
        f"device {args.device}, {args.threads} thread(s), Adam {args.adam}, "
        f"batch {args.batch_size}, epoch = 1284 clips, "
        f"time from {args.batches} steps after a warm-up"
    )
    print(f"| layout | model | s / epoch | ms / step | {mem} | parameters |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['layout']} | {r['model']} | error: {r['error']} | | | |")
        else:
            print(f"| {r['layout']} | {r['model']} | {r['s_per_epoch']:.1f} | {r['ms_per_step']:.0f} | "
                  f"{r['peak_mib']:.0f} | {r['params']:,} |")


if __name__ == "__main__":
    main()
