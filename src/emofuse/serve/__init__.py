"""`emofuse serve`: an HTTP API and a page for trying a trained run (or an ensemble of runs) on a clip.

One process: the run and the extraction models are loaded once, at start-up, into a bounded
pool of workers (`PredictorPool`); the FastAPI app (`create_app`) turns uploads into the same
prediction dicts as `emofuse predict --json`, and the page at / lets a person upload or record
a clip and see the score, the word timeline coloured by contribution and the explain picture.

The page is a small HTML + vanilla JavaScript file of our own (static/), not a Gradio app:
Gradio is a very large dependency tree that brings its own frontend bundle and server
conventions, while the page needs one upload, one recording button and one result view over
the API it sits on. It has no build step, and the `serve` extra stays three packages (FastAPI,
uvicorn, python-multipart).

Needs `pip install emofuse[serve]` (scripts/install_serve.sh); the modules import FastAPI.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence

from emofuse.serve.app import Limits, create_app, parse_record
from emofuse.serve.workers import PngStore, PredictorPool, QueueFull, warm_up

__all__ = ["Limits", "PngStore", "PredictorPool", "QueueFull", "create_app", "is_loopback", "parse_record",
           "serve", "warm_up"]


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(run_dir: str | Sequence[str], host: str = "127.0.0.1", port: int = 7860, workers: int = 1,
          queue_size: int = 4, limits: Limits | None = None, device: str = "cpu",
          cache_dir: str | None = None) -> None:
    """Load the run (several: their ensemble) into a pool, then serve the app with uvicorn until
    interrupted."""
    import uvicorn

    if not is_loopback(host):
        print(f"emofuse serve: listening on {host}, reachable from other machines; the API has no "
              "authentication", file=sys.stderr)
    pool = PredictorPool(run_dir, workers, queue_size, device, cache_dir)
    runs = run_dir if isinstance(run_dir, str) else ", ".join(run_dir)
    print(f"emofuse serve: {pool.first.describe()['model']} {pool.first.describe()['modalities']} from "
          f"{runs}, {workers} worker(s) loaded in {pool.load_seconds:.1f} s; http://{host}:{port}/",
          file=sys.stderr)
    try:
        uvicorn.run(create_app(pool, limits), host=host, port=port, log_level="info")
    finally:
        pool.close()
