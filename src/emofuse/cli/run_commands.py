"""The commands that use a trained run: evaluate, robustness, predict, explain, serve."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emofuse.cli.common import (
    add_run_arguments,
    check_writable_parent,
    command,
)
from emofuse.errors import MissingDependency, OptionError, UserError


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run folder, or a folder of seed_N runs; several are also scored as their ensemble "
                   "(the mean of their class probabilities or scores)")
    p.add_argument("--data", help="another dataset (same formats as train --data)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    add_run_arguments(p, only=("device",))
    p.add_argument("--json", help="also write the report to this JSON file")
    p.add_argument("--plots", metavar="DIR", help="a classifier's confusion matrix per split as "
                   "DIR/confusion_<split>.png (the ensemble's, for several runs)")


@command(
    "evaluate",
    help="score a run's best checkpoint, on its data or another dataset; several runs (or a folder of "
    "seeds) also as an ensemble",
    arguments=_evaluate_arguments,
)
def cmd_evaluate(args: argparse.Namespace) -> int:
    from emofuse.evaluation.ensemble import expand_runs
    from emofuse.evaluation.evaluate import evaluate_run, evaluate_runs
    from emofuse.reports.tables import markdown_table
    from emofuse.training.multiseed import summary_keys

    splits = ("train", "valid", "test") if args.split == "all" else (args.split,)
    runs = expand_runs(args.run_dirs)
    if len(runs) > 1:
        report = evaluate_runs(runs, args.data, splits, args.device)
        keys = summary_keys(report["ensemble"][splits[0]])
        rows = [
            {"run": name, "split": s, **{k: scores[s][k] for k in keys}}
            for s in splits
            for name, scores in [*((m["run"], m) for m in report["members"]),
                                 ("ensemble", report["ensemble"])]
        ]
        print(f"{len(runs)} runs and their ensemble (mean of their "
              f"{'class probabilities' if 'accuracy' in keys else 'scores'}) on {report['data']}")
        print(markdown_table(rows, ["split", *keys], first="run"))
    else:
        report = evaluate_run(runs[0], args.data, splits, args.device)
        keys = summary_keys(report[splits[0]])
        rows = [{"split": s, **{k: report[s][k] for k in keys}} for s in splits]
        given = args.run_dirs[0]
        print(f"run {given if runs[0] == Path(given).expanduser() else runs[0]} on {report['data']}")
        print(markdown_table(rows, keys, first="split"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    if args.plots:
        _confusion_plots(report.get("ensemble", report), splits, Path(args.plots))
    return 0


def _confusion_plots(report: dict[str, Any], splits: tuple[str, ...], folder: Path) -> None:
    from emofuse.training.artifacts import plot_confusion_matrix

    scored = [s for s in splits if "confusion_matrix" in report[s]]
    if not scored:
        runs = report.get("run") or ", ".join(report.get("runs", []))
        raise OptionError(f"--plots draws a classifier's confusion matrices; {runs} is a regression run "
                          "(scores, no classes)")
    folder.mkdir(parents=True, exist_ok=True)
    for split in scored:
        names = list(report[split]["per_class"])
        title = f"{split}: accuracy {100 * report[split]['accuracy']:.1f} %"
        path = plot_confusion_matrix(report[split]["confusion_matrix"], names,
                                     folder / f"confusion_{split}.png", title=title)
        print(f"confusion matrix: {path}")


def _robustness_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset (default: the run's)")
    p.add_argument("--out", help="output folder (default RUN_DIR/robustness)")
    p.add_argument("--seed", type=int, default=0)
    add_run_arguments(p, only=("device",))


@command(
    "robustness",
    help="a run's test score with one modality missing or noised at levels 0-0.9",
    arguments=_robustness_arguments,
)
def cmd_robustness(args: argparse.Namespace) -> int:
    from emofuse.evaluation.evaluate import load_data, load_run
    from emofuse.evaluation.robustness import plot_robustness, robustness_curves
    from emofuse.files import atomic_write_text

    run = load_run(Path(args.run_dir), args.device)
    data = load_data(args.data or run.config.data, run.config)  # read as the run was trained
    result = robustness_curves(run, data.test, seed=args.seed)
    out = Path(args.out or Path(args.run_dir) / "robustness")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps(result, indent=2) + "\n")
    plot_robustness(result, out / "robustness.png", f"{run.config.model} {run.config.modalities}")
    key = result["metric"]
    print(f"{key} on test: clean {100 * result['clean']:.1f}")
    print(
        "| modality | missing | "
        + " | ".join(f"{lv:.1f}" for lv in next(iter(result["modalities"].values()))["levels"])
        + " | AUC |"
    )
    print("|---|---|" + "---|" * (len(next(iter(result["modalities"].values()))["levels"]) + 1))
    for m, c in result["modalities"].items():
        cells = " | ".join(f"{100 * s:.1f}" for s in c["scores"])
        print(f"| {m} | {100 * c['missing']:.1f} | {cells} | {100 * c['auc']:.1f} |")
    for m, c in result["modalities"].items():
        if c.get("corruption", "").startswith("tokens"):
            print(f"{m} is read by the model's text encoder: corrupted as {c['corruption']}")
    print(f"curves: {out / 'robustness.png'}")
    return 0


def _transcripts(args: argparse.Namespace) -> list[str | None]:
    """--transcript once (one clip) or once per clip, in the clips' order."""
    given = args.transcript or []
    if not given:
        return [None] * len(args.clips)
    if len(given) != len(args.clips):
        raise OptionError(
            f"--transcript given {len(given)} times for {len(args.clips)} clips: give it once per clip"
        )
    return list(given)


def _print_prediction(p: dict[str, Any]) -> None:
    if "class" in p:
        head = f"class {p['class']} (p {p['probability']:.3f})"
    else:
        labels = p["labels"]
        head = f"score {p['score']:+.3f}  2-class {labels['2']}, 3-class {labels['3']}, 7-class {labels['7']}"
    print(f"{p['clip']}: {head}")
    if "members" in p:
        print("  runs: " + ", ".join(
            f"{m['run']} {m['class']} (p {m['probability']:.3f})" if "class" in m
            else f"{m['run']} {m['score']:+.3f}"
            for m in p["members"]))
    words = " ".join(f"{w['word']}[{w['start']:.2f}-{w['end']:.2f}]" for w in p["words"])
    print(f"  words ({p['word_source']}): {words}")
    key = "probability_without" if "class" in p else "score_without"
    print("  without each modality: " + ", ".join(
        f"{m} {c[key]:+.3f} (contribution {c['contribution']:+.3f})" for m, c in p["contributions"].items()))
    print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in p["timings"].items()))
    for note in p.get("notes", []):
        print(f"  note: {note}")


SPEAKER_REF_HELP = (
    "a clip of the same speaker, or a folder of them; repeatable. For a run trained with -D "
    "speaker_norm (RAVDESS): they fit the speaker's log-mel normalisation, as all of an actor's "
    "clips did in training"
)


def _speaker_references(paths: list[str] | None) -> list[Path]:
    """--speaker-ref values: files as given, folders as their media files (sorted)."""
    from emofuse.features.clip_table import MEDIA_EXTENSIONS

    out: list[Path] = []
    for given in paths or []:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in MEDIA_EXTENSIONS)
            if not found:
                raise UserError(
                    f"--speaker-ref {given}: the folder holds no {'/'.join(MEDIA_EXTENSIONS)} files"
                )
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise UserError(f"--speaker-ref {given}: no such file or folder")
    return out


def _predictor(args: argparse.Namespace, runs: list[Path] | None = None) -> Any:
    """The runs' predictor for predict and explain (an ensemble for several), with the torch threads and
    speaker clips asked for. runs: the --run folders expanded already (default: expanded here)."""
    import torch

    from emofuse.evaluation.ensemble import expand_runs
    from emofuse.inference.ensemble import open_predictor

    references = _speaker_references(args.speaker_ref)  # a bad option is reported before a bad run
    torch.set_num_threads(max(1, args.threads))
    runs = runs or expand_runs(args.run)
    return open_predictor(runs, args.device, args.cache, speaker_reference=references)


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clips", nargs="+", metavar="CLIP")
    add_run_arguments(p)
    p.add_argument(
        "--transcript",
        action="append",
        help="the words spoken (force-aligned instead of recognised); once per clip",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per clip")
    p.add_argument("--speaker-ref", action="append", metavar="PATH", help=SPEAKER_REF_HELP)


@command(
    "predict",
    help="score clips (mp4, or wav + --transcript) with a trained run, or the ensemble of several: labels, "
    "words, per-modality contributions, time per stage",
    arguments=_predict_arguments,
)
def cmd_predict(args: argparse.Namespace) -> int:
    transcripts = _transcripts(args)
    with _predictor(args) as predictor:
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


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clip")
    add_run_arguments(p, run_help="a run folder (one seed_N folder of `emofuse train`); one run only: the "
                      "picture shows one model's internals")
    p.add_argument("--out", required=True, help="FILE.png")
    p.add_argument("--transcript", help="the words spoken (force-aligned instead of recognised)")
    p.add_argument("--speaker-ref", action="append", metavar="PATH", help=SPEAKER_REF_HELP)


@command(
    "explain",
    help="one clip's prediction as a picture: words by contribution, matching matrices, "
    "attention, Harris-3D frames",
    arguments=_explain_arguments,
)
def cmd_explain(args: argparse.Namespace) -> int:
    from emofuse.evaluation.ensemble import expand_runs
    from emofuse.inference import explain

    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".png":
        raise OptionError(f"--out {args.out}: give a .png file name")
    runs = expand_runs(args.run)
    if len(runs) > 1:
        raise OptionError(
            f"explain shows one model's internals (its matching matrices, attention, word contributions), "
            f"so it takes one run; --run gave {len(runs)}: {', '.join(map(str, runs))}"
        )
    check_writable_parent(out, args.out)
    with _predictor(args, runs) as predictor:
        result = explain(predictor, args.clip, out, args.transcript)
    _print_prediction(result)
    print(
        "  word contributions: "
        + ", ".join(f"{w['word']} {w['contribution']:+.3f}" for w in result["word_contributions"])
    )
    print(f"wrote {out} ({', '.join(result['panels'])})")
    return 0


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workers", type=int, default=1, help="clips scored at once (each loads its own models)")
    p.add_argument("--queue", type=int, default=4, help="requests that may wait; more are answered 503")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="larger uploads are answered 413")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per request, queue included (504 past it)"
    )
    p.add_argument("--explain-cache", type=int, default=64, help="explain pictures kept in memory")


@command(
    "serve",
    help="an HTTP API and a page for trying a run, or the ensemble of several, on clips "
    "(pip install 'emofuse[serve]'); docs at /docs",
    arguments=_serve_arguments,
)
def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    missing = [m for m in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"serve needs {', '.join(missing)}: pip install 'emofuse[serve]' "
                        "(or bash scripts/install_serve.sh)")
    from emofuse.evaluation.ensemble import expand_runs
    from emofuse.serve import Limits, serve

    runs = [str(run) for run in expand_runs(args.run)]
    torch.set_num_threads(max(1, args.threads))
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1e6), timeout_s=args.timeout,
                    explain_cache=args.explain_cache)
    serve(runs, args.host, args.port, args.workers, args.queue, limits, args.device, args.cache)
    return 0
