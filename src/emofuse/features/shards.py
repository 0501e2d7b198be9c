"""Sharded extraction: `emofuse extract --shard i/n` writes a shard file, `--merge` joins them.

Shard i of n holds rows i, i+n, i+2n, ... of label.csv (i counts from 0, so SLURM_ARRAY_TASK_ID
with --array=0-(n-1) names it). `merge_shards` checks that the shards come from the same label.csv
and config, that every shard 0..n-1 is there once and every clip exactly once, then writes the
pickles and a merged report.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emofuse.data.dataset import DataFormatError
from emofuse.errors import InputNotFound, OptionError
from emofuse.features.clip import ExtractConfig
from emofuse.features.clip_table import ClipJob, DatasetTable, dataset_rows, recognises_words
from emofuse.features.extract_pickles import write_pickles
from emofuse.features.extract_report import ExtractResult, build_report, report_paths, write_report
from emofuse.features.pool import ClipResult
from emofuse.files import atomic_write_bytes

SHARD_FORMAT = "emofuse-extract-shard"
SHARD_VERSION = 1


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/8' -> (2, 8); i counts from 0 (SLURM_ARRAY_TASK_ID with --array=0-7)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise OptionError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise OptionError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards count from 0)")
    return i, n


def write_shard(out: Path, table: DatasetTable, config: ExtractConfig, shard: tuple[int, int],
                jobs: Sequence[ClipJob], results: Sequence[ClipResult], on_error: str, labels: str,
                raw_store: Path | None) -> None:
    """The shard file: its clips' results and what `merge_shards` checks the shards agree on."""
    payload = {
        "format": SHARD_FORMAT, "version": SHARD_VERSION, "label_csv": str(table.source),
        "label_sha256": table.fingerprint, "config": config.to_dict(), "shard": list(shard),
        "clip_ids": [j.clip_id for j in jobs], "results": list(results), "on_error": on_error,
        "labels": labels, "raw_store": None if raw_store is None else str(raw_store.resolve()),
    }
    atomic_write_bytes(out, lambda handle: pickle.dump(payload, handle, protocol=4))


class _ShardUnpickler(pickle.Unpickler):
    """Reads shard files written before ClipResult moved out of emofuse.features.extract."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "emofuse.features.extract" and name == "ClipResult":
            return ClipResult
        return super().find_class(module, name)


def _read_shard(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputNotFound(path, f"shard file {path} does not exist")
    try:
        with open(path, "rb") as handle:
            payload = _ShardUnpickler(handle).load()  # our own shard files only
    except Exception as exc:  # truncated: EOFError, garbage: UnpicklingError, ...
        raise DataFormatError(f"{path} is not a readable shard file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != SHARD_FORMAT:
        raise DataFormatError(f"{path} is not an `emofuse extract --shard` output")
    return payload


def merge_shards(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 dataset_dir: str | os.PathLike[str] | None = None) -> ExtractResult:
    """Check that the shards cover every clip of label.csv exactly once, then write the pickles."""
    out = Path(out)
    payloads = [(Path(p), _read_shard(Path(p))) for p in shards]
    if not payloads:
        raise OptionError("no shard files given")
    first_path, first = payloads[0]
    n = first["shard"][1]
    seen: dict[int, Path] = {}
    for path, p in payloads:
        for key, what in (("label_sha256", "label.csv"), ("config", "extraction config"),
                          ("on_error", "--on-error policy")):
            if p[key] != first[key]:
                raise DataFormatError(f"{path} was made with another {what} than {first_path}")
        i, m = p["shard"]
        if m != n:
            raise DataFormatError(f"{path} is shard {i}/{m} but {first_path} is one of {n} shards")
        if i in seen:
            raise DataFormatError(f"shard {i}/{n} given twice: {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise DataFormatError(f"shard(s) {missing} of {n} are missing; got {sorted(seen)}")
    config = ExtractConfig(**{k: tuple(v) if k == "audio" else v for k, v in first["config"].items()})
    table = dataset_rows(Path(dataset_dir) if dataset_dir is not None else Path(first["label_csv"]),
                         first.get("labels", "auto"), allow_empty_text=recognises_words(config))
    label, df = table.source, table.df
    if table.fingerprint != first["label_sha256"]:
        raise DataFormatError(f"{label} changed since the shards were extracted")
    results: dict[str, ClipResult] = {}
    for path, p in payloads:
        for r in p["results"]:
            if r.clip_id in results:
                raise DataFormatError(f"clip {r.clip_id} appears in two shards ({path})")
            results[r.clip_id] = r
    expected = [f"{v}$_${c}" for v, c in zip(df["video_id"], df["clip_id"], strict=True)]
    absent = [c for c in expected if c not in results]
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise DataFormatError(f"{len(absent)} clip(s) of {label} are in no shard: {absent[:5]}{more}")
    extra = sorted(set(results) - set(expected))
    if extra:
        raise DataFormatError(f"shards hold clips that {label} does not list: {extra[:5]}")
    ordered = [results[c] for c in expected]
    texts = {f"{v}$_${c}": t for v, c, t in zip(df["video_id"], df["clip_id"], df["text"], strict=True)}
    report = build_report(ordered, config, label, None, 0.0, 0, transcripts=texts)
    report["merged_from"] = [str(p) for p, _ in payloads]
    out.parent.mkdir(parents=True, exist_ok=True)
    # the shards' raw stores stay where they were written; the merged pickle names their files
    stores = {p.get("raw_store") for _, p in payloads}
    if len(stores) > 1 and None in stores:
        raise DataFormatError("some shards were extracted with --raw and others without; extract them alike")
    store = next(iter(stores)) if stores else None
    outputs = write_pickles(table, ordered, config, out, first["on_error"],
                            Path(store) if store is not None else None)
    write_report(report, out)
    return ExtractResult([*outputs, *report_paths(out)], report)

