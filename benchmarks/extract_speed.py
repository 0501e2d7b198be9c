"""Extraction speed: time per stage as a multiple of real time, with 1 and 2 workers, and peak memory.

    python benchmarks/extract_speed.py                      # generated clips (espeak-ng speech, a face)
    python benchmarks/extract_speed.py --folder DIR --audio-only   # any MMSA-FET folder (label.csv + Raw/)

All modalities with the raw inputs (`extract --raw`: per-word face crops and log-mel patches) by
default; --no-raw gives the pickles alone.

Each configuration runs in a fresh process with an empty stage cache, so nothing is a cache hit
and the peak memory is that run's own: the largest single process (max RSS), and the sum over the
process and its workers (sampled from /proc every 0.2 s).
Stage columns are seconds of per-clip work per second of media, summed over clips (with 2
workers the stages run side by side, so they add up to more than the wall time; 'raw' is writing
the raw store); model loading is not in them: 'load s' is the seconds it took, summed over the
processes that loaded (each worker loads its own models, before its first clip). 'wall' is the
elapsed time per second of media, loading included. Torch runs one thread per process, as
`emofuse extract` does (its workers run one thread per native pool).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SENTENCES = ["i really love this movie", "this was a terrible waste of time", "what a fine day it is",
             "not good at all", "the acting was wonderful", "i did not like the ending"]


def make_folder(root: Path, clips: int) -> Path:
    """An MMSA-FET folder of generated talking-face clips (the tests' media generator)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "features"))
    import pandas as pd
    from extract_media import speaking_clip

    rows = []
    for i in range(clips):
        text = SENTENCES[i % len(SENTENCES)]
        speaking_clip(root / "Raw" / "bench" / f"{i}.mp4", text.split())
        rows.append(("bench", str(i), text, 0.0, "x", ("train", "valid", "test")[i % 3]))
    pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"]).to_csv(
        root / "label.csv", index=False)
    return root


def _tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), in MiB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as handle:
                rss[int(entry)] = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue  # the process ended while being read
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += [c for c, p in parents.items() if p == pid]
    return total / 2**20


class MemorySampler(threading.Thread):
    """The peak of `_tree_rss_mib` over the run, sampled every 0.2 s (workers' memory adds up)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, _tree_rss_mib(os.getpid()))


def child(folder: str, workers: int, audio_only: bool, asr: bool, raw: bool, out: str) -> None:
    """One measured extraction (run in its own process); prints its figures as JSON."""
    import torch

    from emofuse.features.clip import ExtractConfig
    from emofuse.features.extract import extract_dataset

    torch.set_num_threads(1)
    config = ExtractConfig(video=not audio_only, words="whisper" if asr else "auto")
    sampler = MemorySampler() if os.path.isdir("/proc") else None
    if sampler is not None:
        sampler.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        result = extract_dataset(folder, out, config=config, workers=workers, cache_dir=cache, raw=raw,
                                 progress=False)
    wall = time.perf_counter() - started
    if sampler is not None:
        sampler.done.set()
        sampler.join()
    report = result.report
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"workers": workers, "clips": report["clips"], "ok": report["ok"],
                      "media_seconds": report["media_seconds"], "wall_seconds": wall,
                      "stage_seconds": report["stage_seconds"], "raw": raw,
                      "model_load_seconds": report.get("model_load_seconds"),
                      "model_load_seconds_by_model": report.get("model_load_seconds_by_model"),
                      "model_load_workers": report.get("model_load_workers"), "peak_mib": peak_kib / 1024,
                      "peak_total_mib": sampler.peak if sampler is not None else None}))


def table(rows: list[dict]) -> str:
    stages = sorted({s for r in rows for s in r["stage_seconds"]}, key=lambda s: (s != "decode", s))
    head = ["workers", "clips ok", "media s", *stages, "all stages", "wall", "load s",
            "peak MiB (largest process)", "peak MiB (all processes)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        media = r["media_seconds"] or float("nan")
        per = [r["stage_seconds"].get(s, 0.0) / media for s in stages]
        cells = [str(r["workers"]), f"{r['ok']}/{r['clips']}", f"{media:.1f}", *(f"{x:.3f}" for x in per),
                 f"{sum(per):.3f}", f"{r['wall_seconds'] / media:.3f}",
                 "-" if r.get("model_load_seconds") is None else f"{r['model_load_seconds']:.2f}",
                 f"{r['peak_mib']:.0f}",
                 "-" if r.get("peak_total_mib") is None else f"{r['peak_total_mib']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="an MMSA-FET folder (default: generate --clips talking-face clips)")
    parser.add_argument("--clips", type=int, default=6, help="generated clips")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--audio-only", action="store_true", help="wav input: no face stage")
    parser.add_argument(
        "--asr", action="store_true", help="recognise words (whisper) instead of aligning label.csv text"
    )
    parser.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the raw store (face crops, log-mel), as `extract --raw` (default)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", nargs=2, metavar=("WORKERS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.folder, int(args.child[0]), args.audio_only, args.asr, args.raw, args.child[1])
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else make_folder(Path(tmp) / "fet", args.clips)
        rows = []
        for workers in args.workers:
            cmd = [sys.executable, __file__, "--folder", str(folder), "--child", str(workers),
                   str(Path(tmp) / f"w{workers}.pkl")]
            cmd += ["--audio-only"] * args.audio_only + ["--asr"] * args.asr
            cmd += ["--raw" if args.raw else "--no-raw"]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    raw = "with" if args.raw else "without"
    print(f"extraction time per second of media, {raw} the raw store (cores: {os.cpu_count()}; "
          "'load s': model loading, seconds over all workers; 'wall' includes it)")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
