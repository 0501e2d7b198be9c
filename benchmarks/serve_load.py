"""Load on `emofuse serve`: N concurrent clients posting a clip, on 127.0.0.1 only.

    python benchmarks/serve_load.py                           # a generated clip and a 1-epoch run
    python benchmarks/serve_load.py --run RUN_DIR --clip CLIP.mp4 --clients 1,2,4 --requests 8

The server is `emofuse serve` in its own process, started here on 127.0.0.1 (never another
address) with --workers and --queue; each level of clients sends a bounded number of requests
(--requests) within a time cap (--time-cap s), every client a loop of POST /v1/predict. A 503
(queue full) is an answer: it is counted and reported, and the client waits min(Retry-After, 1) s.
Printed per level: clients, requests sent, 200s, errors by status, requests per second (answers
over the level's wall time), p50/p95 latency of the 200s, the server's peak RSS so far (VmHWM of
its process), and whether every request got an answer. Torch runs one thread in the server.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # the benchmark never listens or connects anywhere else
REPO = Path(__file__).resolve().parents[1]


def make_run(root: Path) -> tuple[Path, Path]:
    """A generated MMSA-FET folder, extracted, a 1-epoch T+A+V run on it, and a new clip to post."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO / "tests" / "features"))
    from extract_media import speaking_clip
    from extract_speed import make_folder

    from emofuse.cli.main import main

    folder = make_folder(root / "fet", 6)
    if main(
        ["extract", str(folder), "--out", str(root / "feat.pkl"), "--cache", str(root / "cache"), "--quiet"]
    ):
        raise SystemExit("serve_load: extraction of the generated clips failed")
    if main(["train", "--data", str(root / "feat.pkl"), "--model", "fusion_matched", "--modalities", "T+A+V",
             "--epochs", "1", "--threads", "1", "--batch-size", "2", "--quiet", "--out", str(root / "run"),
             "-o", "hidden=16"]):
        raise SystemExit("serve_load: training the 1-epoch run failed")
    clip = root / "clip.mp4"
    speaking_clip(clip, "what a wonderful film this was".split())
    return root / "run" / "seed_1", clip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`emofuse serve` in a child process on 127.0.0.1; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, run: Path, workers: int, queue: int, timeout: float, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emofuse.cli.main",
                "serve",
                "--run",
                str(run),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--queue",
                str(queue),
                "--timeout",
                str(timeout),
                "--threads",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, seconds: float) -> float:
        import httpx

        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"serve_load: the server exited ({self.proc.returncode}); see {self.log.name}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"serve_load: the server was not ready within {seconds:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def level(url: str, clip: Path, clients: int, requests: int, cap: float, explain: bool,
          request_timeout: float) -> dict:
    """`clients` threads share `requests` POSTs, none started after `cap` s; per-request outcomes."""
    import httpx

    data = clip.read_bytes()
    lock = threading.Lock()
    left = [requests]
    outcomes: list[tuple[int | str, float]] = []
    started = time.monotonic()

    def client() -> None:
        with httpx.Client(timeout=request_timeout) as session:
            while True:
                with lock:
                    if left[0] == 0 or time.monotonic() - started > cap:
                        return
                    left[0] -= 1
                t0 = time.monotonic()
                try:
                    r = session.post(url + "/v1/predict", files={"file": (clip.name, data, "video/mp4")},
                                     params={"explain": str(explain).lower()})
                    status: int | str = r.status_code
                    retry = float(r.headers.get("Retry-After", 0) or 0)
                except httpx.HTTPError as err:  # no answer: what the benchmark must show never happens
                    status, retry = type(err).__name__, 0.0
                with lock:
                    outcomes.append((status, time.monotonic() - t0))
                if status == 503:
                    time.sleep(min(retry, 1.0))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    sent = requests - left[0]
    ok = [s for status, s in outcomes if status == 200]
    errors = Counter(str(status) for status, _ in outcomes if status != 200)
    answered = sum(1 for status, _ in outcomes if isinstance(status, int))
    return {"clients": clients, "requests": sent, "ok": len(ok), "errors": dict(errors),
            "rps": answered / wall if wall else 0.0, "ok_rps": len(ok) / wall if wall else 0.0,
            "p50": float(np.percentile(ok, 50)) if ok else float("nan"),
            "p95": float(np.percentile(ok, 95)) if ok else float("nan"),
            "answered": answered, "wall": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder (default: a 1-epoch run on generated clips)")
    parser.add_argument("--clip", help="the clip to post (default: a generated one)")
    parser.add_argument("--clients", default="1,2,4", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=6, help="requests per level")
    parser.add_argument("--time-cap", type=float, default=120.0, help="seconds per level after which no "
                        "request is started")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="the server's per-request limit")
    parser.add_argument("--no-explain", action="store_true", help="skip the explain picture (?explain=false)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    if not levels or min(levels) < 1 or args.requests < 1:
        parser.error("--clients needs positive numbers and --requests at least 1")

    with tempfile.TemporaryDirectory(prefix="emofuse-serve-load-") as tmp:
        root = Path(tmp)
        if args.run and args.clip:
            run, clip = Path(args.run), Path(args.clip)
        elif args.run or args.clip:
            parser.error("give both --run and --clip, or neither")
        else:
            t0 = time.monotonic()
            run, clip = make_run(root)
            print(f"generated a run and a clip in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        server = Server(run, args.workers, args.queue, args.timeout, root / "server.log")
        try:
            ready = server.wait_ready(300)
            print(
                f"server on {server.url}: ready in {ready:.1f} s "
                f"(workers {args.workers}, queue {args.queue}, "
                f"explain {'off' if args.no_explain else 'on'}); peak RSS after start-up "
                f"{peak_rss_mib(server.proc.pid):.0f} MiB",
                flush=True,
            )
            rows = []
            for clients in levels:
                row = level(server.url, clip, clients, args.requests, args.time_cap, not args.no_explain,
                            args.timeout + 30)
                row["rss"] = peak_rss_mib(server.proc.pid)
                rows.append(row)
                print(f"  {clients} client(s): {row['ok']}/{row['requests']} ok in {row['wall']:.1f} s",
                      file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(
        "| clients | requests | ok | errors (by status) | answers/s | ok/s | p50 s | p95 s "
        "| server peak RSS MiB "
        "| all answered |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "-"
        print(
            f"| {r['clients']} | {r['requests']} | {r['ok']} | {errors} | "
            f"{r['rps']:.2f} | {r['ok_rps']:.2f} | "
            f"{r['p50']:.2f} | {r['p95']:.2f} | {r['rss']:.0f} | "
            f"{'yes' if r['answered'] == r['requests'] else 'NO'} |"
        )
    unanswered = sum(r["requests"] - r["answered"] for r in rows)
    print(f"every request got an answer: {'yes' if not unanswered else f'no, {unanswered} without one'}")
    return 0 if not unanswered else 1


if __name__ == "__main__":
    sys.exit(main())
