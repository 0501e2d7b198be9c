"""The commands that train: train, demo, ablate, compare, tune, list-models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emofuse.cli.common import (
    add_recipe_arguments,
    add_training_arguments,
    command,
    given_model_options,
    load_data,
    recipe_overrides,
    train_config,
)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder (default runs/<model>_<modalities>)")
    add_training_arguments(p)


@command("train", help="train a model (one run folder per seed)", arguments=_train_arguments)
def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from emofuse.data.dataset import modality_code, parse_modalities
    from emofuse.reports.tables import markdown_table, summary_row
    from emofuse.training.distributed import process_group
    from emofuse.training.multiseed import dropped_note, summary_keys, train_seeds
    from emofuse.training.trainer import train_run

    config = train_config(args)  # bad options fail before the data is read
    code = modality_code(parse_modalities(config.modalities))
    splits = load_data(config)
    out = Path(args.out or f"runs/{config.model}_{code.replace('+', '')}")
    with process_group(config.device) as ctx:  # torchrun: one process of several (DDP)
        if not ctx.is_main:  # rank 0 writes the run folders and prints; the others train alongside
            for seed in args.seeds:
                train_run(
                    dataclasses.replace(config, seed=seed),
                    splits,
                    out / f"seed_{seed}",
                    resume=args.resume,
                    progress=False,
                )
            return 0
        print(f"data: {splits.describe()}", file=sys.stderr)
        results, summary = train_seeds(
            config, splits, out, args.seeds, resume=args.resume, progress=not args.quiet
        )
    keys = summary_keys(results[0].metrics["test"])
    print(markdown_table([summary_row(f"{config.model} {code}", summary["test"])], keys))
    note = dropped_note({k: summary["test"][k] for k in keys}, len(args.seeds))
    if note:
        print(f"note: {note}")
    print(f"\nrun folders: {out}/seed_*  (test split; mean ± std over {len(args.seeds)} seed(s))")
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (one thread each)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on small shared machines)"
    )
    p.add_argument(
        "--resume", action="store_true", help="reuse finished runs in --out, continue interrupted ones"
    )
    p.add_argument("--quiet", action="store_true")


@command(
    "demo",
    help="both fusion-matched networks and two baselines on the synthetic data, aligned and "
    "unaligned, next to the ceilings: two tables",
    arguments=_demo_arguments,
)
def cmd_demo(args: argparse.Namespace) -> int:
    from emofuse.reports.demo import run_demo

    run_demo(
        Path(args.out),
        epochs=args.epochs,
        seeds=args.seeds,
        progress=not args.quiet,
        threads=args.threads,
        resume=args.resume,
        workers=args.workers,
    )
    return 0


def _ablate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        "--model",
        nargs="+",
        dest="models",
        default=["fusion_matched", "fusion_matched_xattn"],
        help="default: both fusion-matched networks (the paper's and the extension)",
    )
    p.add_argument("--out", help="output folder (default runs/ablate_<models>)")
    p.add_argument(
        "--attention",
        action="store_true",
        help="instead of modality subsets: the raw video encoder's attention harris3d vs harris2d vs none "
        "(--video-encoder, default harris3d_cnn), with a paired bootstrap",
    )
    p.add_argument(
        "--attention-modalities", default="V", help="modalities of the --attention runs (default V)"
    )
    add_recipe_arguments(p)
    add_training_arguments(p, exclude=("model", "modalities"))


@command(
    "ablate",
    help="models over all seven modality subsets: table, CSV and bar plots",
    arguments=_ablate_arguments,
)
def cmd_ablate(args: argparse.Namespace) -> int:
    from emofuse.reports.ablate import run_ablation

    models = list(args.models)
    if args.attention:
        return _ablate_attention(args, models)
    options = given_model_options(args, models)  # bad options fail before data loading
    base = train_config(args, model=models[0], modalities="T+A+V", per_model_options=True)
    splits = load_data(base)
    out = Path(args.out or f"runs/ablate_{'_'.join(models) if len(models) < 3 else 'models'}")
    run_ablation(
        base,
        splits,
        args.seeds,
        out,
        progress=not args.quiet,
        models=models,
        same_recipe=args.same_recipe,
        overrides=recipe_overrides(args),
        model_options=options,
        resume=args.resume,
    )
    print((out / "ablation.md").read_text())
    print(f"CSV, Markdown and bar plots (PNG) in {out}")
    return 0


def _ablate_attention(args: argparse.Namespace, models: list[str]) -> int:
    """`ablate --attention`: the video encoder's harris3d / harris2d / none on one model."""
    from emofuse.errors import UserError
    from emofuse.reports.attention import attention_ablation

    if len(models) != 1:
        raise UserError(f"ablate --attention takes one model (--model NAME), not {models}")
    modalities = args.attention_modalities
    base = train_config(args, model=models[0], modalities=modalities)
    splits = load_data(base)
    out = Path(args.out or f"runs/ablate_attention_{models[0]}")
    result = attention_ablation(base, splits, args.seeds, out, progress=not args.quiet, resume=args.resume)
    print(result["table"])
    print("\nPaired bootstrap (test, seed-averaged predictions):\n")
    print(result["bootstrap_table"])
    print(f"\nMarkdown, JSON and bar plots (PNG) in {out}")
    return 0


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", nargs="+", default=["fusion_matched", "fusion_matched_xattn", "ef_lstm", "late_fusion"]
    )
    p.add_argument("--workers", type=int, default=1, help="parallel training processes (one thread each)")
    p.add_argument("--out", help="output folder (default runs/compare)")
    p.add_argument(
        "--search",
        action="append",
        metavar="KEY=V1,V2[,KEY=...]",
        help="per-model grid scored on validation only, e.g. lr=x0.3,x1,x3 (xF: F times the model's recipe "
        "value), batch_size=32,64; keys: lr, batch_size, weight_decay, grad_clip",
    )
    add_recipe_arguments(p)
    add_training_arguments(p, exclude=("model",))


@command(
    "compare",
    help="several models on one dataset: mean ± std, paired bootstrap, plots",
    arguments=_compare_arguments,
)
def cmd_compare(args: argparse.Namespace) -> int:
    from emofuse.reports.compare import compare_models
    from emofuse.reports.search import parse_search

    out = Path(args.out or "runs/compare")
    options = given_model_options(args, list(args.models))  # bad options fail before data loading
    search = parse_search(args.search)
    base = train_config(args, model=args.models[0], per_model_options=True)
    splits = load_data(base) if args.workers == 1 else None
    result = compare_models(
        base,
        args.models,
        args.seeds,
        out,
        workers=args.workers,
        progress=not args.quiet,
        splits=splits,
        same_recipe=args.same_recipe,
        overrides=recipe_overrides(args),
        model_options=options,
        search=search,
        resume=args.resume,
    )
    print(result["table"])
    print("\ntraining settings per model:")
    print(result["settings_table"])
    print("\npaired bootstrap on the test set (seed-averaged predictions, 95% CI of a - b):")
    print("| a | b | metric | diff | 95% CI | p | significant |\n|---|---|---|---|---|---|---|")
    for r in result["bootstrap"]:
        print(f"| {r['model_a']} | {r['model_b']} | {r['metric']} | {r['diff']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {r['p']:.3f} | {'yes' if r['significant'] else 'no'} |")
    print(f"\ntables, CSVs and compare.png in {out}")
    return 0


def _tune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder (default runs/tune_<model>)")
    p.add_argument(
        "--space",
        action="append",
        metavar="KEY=KIND:...",
        help="a search dimension: lr=log:1e-4:1e-2, hidden=int:32:128, dropout=float:0:0.5, "
        "batch_size=cat:16,32; TrainConfig fields set the field, other keys are model options",
    )
    p.add_argument("--space-file", help="the search space as a JSON, YAML or TOML mapping of KEY to KIND:...")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="study database URL (default sqlite:///OUT/study.db); one URL on many "
                                     "machines shares the study")
    p.add_argument("--study-name", default="", help="default <model>_<modalities>")
    p.add_argument("--prune-startup", type=int, default=5, help="trials that finish before pruning starts")
    add_training_arguments(p)


@command(
    "tune",
    help="Optuna search over training settings and model options, on validation loss; "
    "the best trial becomes OUT/best, a normal run folder",
    arguments=_tune_arguments,
)
def cmd_tune(args: argparse.Namespace) -> int:
    from emofuse.training.tune import load_space, parse_param, tune

    config = train_config(args)  # bad options and a bad space fail before the data is read
    space = [parse_param(item) for item in args.space or []]
    if args.space_file:
        space += load_space(Path(args.space_file))
    out = Path(args.out or f"runs/tune_{config.model}")
    splits = load_data(config)
    print(f"data: {splits.describe()}", file=sys.stderr)
    result = tune(config, splits, space, out, trials=args.trials, timeout=args.timeout, storage=args.storage,
                  study_name=args.study_name, prune_startup=args.prune_startup, progress=not args.quiet)
    print(result.table)
    best = result.study.best_trial
    print(f"\nbest trial {best.number}: validation loss {best.value:.4f} with {best.params}")
    if result.best_dir is not None:
        keys = [
            k
            for k in ("mae", "corr", "acc2_non0", "accuracy", "f1_weighted")
            if k in result.best_metrics["test"]
        ]
        test = ", ".join(f"{k} {result.best_metrics['test'][k]:.4f}" for k in keys)
        print(f"its run folder: {result.best_dir} (test, scored once after the search: {test})")
    print(f"all trials: {out / 'study.csv'}, {out / 'history.png'}")
    return 0


@command("list-models", help="list registered models")
def cmd_list_models(args: argparse.Namespace) -> int:
    from emofuse.models import list_models

    print("\n".join(list_models()))
    return 0
