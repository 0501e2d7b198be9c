"""Sharded extraction: `emofuse extract --shard i/n` writes a shard file, `--merge` joins them.

Shard i of n holds rows i, i+n, i+2n, ... of label.csv (i counts from 0, so SLURM_ARRAY_TASK_ID
with --array=0-(n-1) names it). `--shard auto` takes i and n from the scheduler the process runs
under (`shard_from_environment`). `merge_shards` checks that the shards come from the same label.csv
and config, that every shard 0..n-1 is there once and every clip exactly once, then writes the
pickles and a merged report.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Mapping, Sequence
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


_SLURM_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                    "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    """The variable as an integer, None when unset; any other value is an OptionError naming it."""
    value = env.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise OptionError(f"--shard auto: {name}={value!r} is not an integer") from None


def _shard_and_source(env: Mapping[str, str]) -> tuple[int, int, str]:
    """(i, n, the variable i came from); see `shard_from_environment`."""
    task_id = _env_int(env, "SLURM_ARRAY_TASK_ID")
    if task_id is not None:
        values = {name: _env_int(env, name) for name in _SLURM_VARIABLES}
        shown = " ".join(f"{k}={env[k]}" for k in _SLURM_VARIABLES if k in env)
        step, low, high = (values[k] for k in ("SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_MIN",
                                               "SLURM_ARRAY_TASK_MAX"))
        if step is not None and step != 1:
            raise OptionError(f"--shard auto: a stepped job array ({shown}) has ids that are not 0..n-1; "
                              "submit a contiguous one (--array=0-7) or give --shard i/n")
        count = values["SLURM_ARRAY_TASK_COUNT"]
        if count is None:
            if low is None or high is None:
                raise OptionError("--shard auto: SLURM_ARRAY_TASK_ID is set but neither "
                                  "SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX; give --shard i/n")
            count = high - low + 1
            count_text = (f"SLURM_ARRAY_TASK_MIN={env['SLURM_ARRAY_TASK_MIN']} "
                          f"SLURM_ARRAY_TASK_MAX={env['SLURM_ARRAY_TASK_MAX']}")
        else:
            count_text = f"SLURM_ARRAY_TASK_COUNT={env['SLURM_ARRAY_TASK_COUNT']}"
            if low is not None and high is not None and high - low + 1 != count:
                raise OptionError(f"--shard auto: the job array's ids are not contiguous ({shown}); "
                                  "submit --array=0-7 style, or give --shard i/n")
        if count < 1:
            raise OptionError(f"--shard auto: {count_text} gives {count} tasks; need >= 1")
        index = task_id - (low or 0)
        if not 0 <= index < count:
            raise OptionError(f"--shard auto: SLURM_ARRAY_TASK_ID={env['SLURM_ARRAY_TASK_ID']} is task "
                              f"{index} (from 0) of {count}, out of range ({shown})")
        return index, count, "SLURM_ARRAY_TASK_ID"
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    if rank is not None or world is not None:
        if rank is None or world is None:
            missing, given = ("RANK", "WORLD_SIZE") if rank is None else ("WORLD_SIZE", "RANK")
            raise OptionError(f"--shard auto: {given} is set but {missing} is not; give --shard i/n")
        if world < 1:
            raise OptionError(f"--shard auto: WORLD_SIZE={env['WORLD_SIZE']}; need >= 1")
        if not 0 <= rank < world:
            raise OptionError(f"--shard auto: RANK={env['RANK']} is not in 0..{world - 1} "
                              f"(WORLD_SIZE={env['WORLD_SIZE']})")
        return rank, world, "RANK"
    raise OptionError("--shard auto: found no scheduler variables (looked for SLURM_ARRAY_TASK_ID with "
                      "SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MIN/MAX, then RANK with WORLD_SIZE); "
                      "give --shard i/n instead")


def shard_from_environment(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(i, n) of this process from its scheduler: what `--shard auto` means.

    env: the environment to read (os.environ, read at call time, by default).
    A Slurm job array first: i = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (0 when MIN is unset),
    n = SLURM_ARRAY_TASK_COUNT, or MAX - MIN + 1 without it; a stepped or non-contiguous array is
    refused (its ids are not 0..n-1). Otherwise torchrun's RANK and WORLD_SIZE. Neither set, a
    value that is no integer, n < 1 or i outside 0..n-1: OptionError naming the variable.
    """
    i, n, _ = _shard_and_source(os.environ if env is None else env)
    return i, n


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/8' -> (2, 8); i counts from 0 (SLURM_ARRAY_TASK_ID with --array=0-7). 'auto' ->
    `shard_from_environment()`."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return shard_from_environment()
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise OptionError(f"--shard must look like i/n (e.g. 0/4) or be auto, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise OptionError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards count from 0)")
    return i, n


def shard_option(text: str | None) -> tuple[int, int] | None:
    """`extract --shard`'s value resolved; for 'auto' one line on stderr says where it came from
    (`shard 3/8 (from SLURM_ARRAY_TASK_ID)`), so a job's log shows which rows it extracted."""
    if text is not None and text.strip().lower() == "auto":
        i, n, source = _shard_and_source(os.environ)
        print(f"shard {i}/{n} (from {source})", file=sys.stderr, flush=True)
        return i, n
    return parse_shard(text)


def shard_path(out: str | os.PathLike[str], shard: tuple[int, int]) -> Path:
    """Where `--shard auto` writes shard i of n: `feat.pkl` -> `feat.3-of-8.pkl`, so that the tasks
    of one array given the same --out never write one file."""
    path = Path(out)
    return path.with_name(f"{path.stem}.{shard[0]}-of-{shard[1]}{path.suffix}")


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

