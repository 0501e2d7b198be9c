"""`emofuse tune`: an Optuna search over training settings and model options.

- The search space comes from `--space KEY=KIND:...` items or a JSON/YAML/TOML file; a key that
  is a TrainConfig field (lr, batch_size, ...) sets that field, any other key is a model option.
- Each trial is a normal run folder under OUT/trials/, trained with the test split replaced
  before anything reads it (Trainer score_test=False). Its objective is the run's best
  validation loss; after every epoch the best-so-far validation loss is reported to Optuna and
  a MedianPruner may stop the trial (the Trainer's epoch callback).
- The study lives in a database: sqlite:///OUT/study.db by default, or any URL Optuna takes
  (--storage postgresql://..., mysql://...), so processes on many machines can share one study.
- After the search, the best trial's folder is copied to OUT/best and only then is the test
  split scored, once, by the same code that ends a normal run; `emofuse evaluate OUT/best`
  reopens it. OUT/study.csv lists every trial and OUT/history.png plots the search.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emofuse.data.dataset import DatasetSplits
from emofuse.errors import MissingDependency, OptionError, UserError
from emofuse.files import atomic_path
from emofuse.training.config import SPEED_FIELDS, TrainConfig
from emofuse.training.distributed import launched_by_torchrun
from emofuse.training.trainer import TrainingDiverged, train_run

KINDS = ("log", "float", "int", "cat")
# what a trial may not change: the data, the model and where it runs are the question, not the answer
FIXED = {
    "model",
    "modalities",
    "data",
    "data_options",
    "labels",
    "clip_labels",
    "classes",
    "device",
    "threads",
    "seed",
    "text_model",
    "model_options",
    "encoder_options",
    *SPEED_FIELDS,
}


@dataclass(frozen=True)
class Param:
    """One dimension of the search: log/float/int between low and high, or cat among choices."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        where = f"search space {self.name!r}"
        if self.kind not in KINDS:
            raise OptionError(f"{where}: unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "cat":
            if not self.choices:
                raise OptionError(f"{where}: cat needs at least one choice, e.g. {self.name}=cat:16,32")
        elif not self.low < self.high:
            raise OptionError(f"{where}: low ({self.low}) must be below high ({self.high})")
        elif self.kind == "log" and self.low <= 0:
            raise OptionError(f"{where}: log needs a positive low bound, not {self.low}")
        if self.name in FIXED:
            raise OptionError(f"{where}: {self.name} is fixed for the whole study; pass it as a flag instead")

    def suggest(self, trial: Any) -> Any:
        if self.kind == "cat":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


def parse_param(text: str) -> Param:
    """'lr=log:1e-4:1e-2', 'hidden=int:32:128', 'dropout=float:0:0.5', 'batch_size=cat:16,32'."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip():
        raise OptionError(
            f"--space {text!r}: write KEY=KIND:..., e.g. lr=log:1e-4:1e-2 or batch_size=cat:16,32"
        )
    return _param(name.strip(), spec.strip())


def _param(name: str, spec: Any) -> Param:
    if isinstance(spec, dict):  # from a file: {type|kind, low, high} or {choices: [...]}
        # the file's value, whatever its type: Param refuses anything but a known kind
        kind: Any = spec.get("kind", spec.get("type", "cat" if "choices" in spec else ""))
        try:
            return Param(name, kind, float(spec.get("low", 0)), float(spec.get("high", 0)),
                         tuple(spec.get("choices", ())))
        except (TypeError, ValueError) as err:
            raise OptionError(f"search space {name!r}: {err}") from None
    if isinstance(spec, list):
        return Param(name, "cat", choices=tuple(spec))
    kind, _, rest = str(spec).partition(":")
    if kind == "cat":
        return Param(name, "cat", choices=tuple(_value(v) for v in rest.split(",") if v != ""))
    parts = rest.split(":")
    if len(parts) != 2:
        raise OptionError(
            f"search space {name!r}: {spec!r} must be {kind or 'KIND'}:LOW:HIGH (or cat:A,B,...)"
        )
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise OptionError(
            f"search space {name!r}: bounds {parts[0]!r} and {parts[1]!r} must be numbers"
        ) from None
    return Param(name, kind, low, high)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_space(path: Path) -> list[Param]:
    """A search space file: a mapping KEY -> 'KIND:...' string, a list of choices, or a table."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"--space-file {path}: cannot read it ({err.strerror or err})") from None
    try:
        if path.suffix == ".toml":
            import tomllib  # Python 3.11+

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # the parsers' own error types differ; all mean "not valid"
        raise UserError(
            f"--space-file {path}: not valid {path.suffix.lstrip('.') or 'JSON'} ({err})"
        ) from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"--space-file {path}: expected a mapping of KEY to a range, e.g. lr: log:1e-4:1e-2")
    try:
        return [_param(str(k), v) for k, v in data.items()]
    except ValueError as err:
        raise OptionError(f"--space-file {path}: {err}") from None


def trial_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """`base` with the trial's values: TrainConfig fields directly, the rest as model options."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    direct = {k: v for k, v in values.items() if k in fields}
    options = {**base.model_options, **{k: v for k, v in values.items() if k not in fields}}
    return dataclasses.replace(base, **direct, model_options=options)


@dataclass
class TuneResult:
    study: Any  # optuna.Study
    best_dir: Path | None  # OUT/best, or None when the best trial ran on another machine
    best_metrics: dict[str, Any]
    table: str


def tune(
    config: TrainConfig,
    splits: DatasetSplits,
    space: list[Param],
    out: Path,
    trials: int = 20,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str = "",
    prune_startup: int = 5,
    progress: bool = True,
) -> TuneResult:
    """Run `trials` trials (this process's share of the study) and finish the best one."""
    try:
        import optuna
    except ImportError:
        raise MissingDependency("emofuse tune needs Optuna: pip install 'emofuse[tune]'") from None
    if launched_by_torchrun():
        raise UserError("emofuse tune trains one process per trial: instead of torchrun, start several "
                        "`emofuse tune --storage URL --study-name NAME` processes that share one study")
    if not space:
        raise OptionError("give a search space: --space lr=log:1e-4:1e-2 ... or --space-file FILE")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or f"{config.model}_{config.modalities.replace('+', '')}"
    # a fixed seed makes a study on one machine repeatable; machines sharing a study must not
    # all propose the same first trials
    sampler = optuna.samplers.TPESampler(seed=config.seed if storage is None else None)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=1)
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=name, storage=url, sampler=sampler, pruner=pruner,
                                    direction="minimize", load_if_exists=True)
    except Exception as err:  # bad URL, unreachable server, a missing DB driver
        raise UserError(f"--storage {url}: cannot open the study ({type(err).__name__}: {err})") from None
    search = _search_splits(splits)

    def objective(trial: Any) -> float:
        cfg = trial_config(config, {p.name: p.suggest(trial) for p in space})
        run_dir = out / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())

        def report(epoch: int, row: dict[str, Any]) -> None:
            trial.report(row["best_valid_loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: best validation loss {row['best_valid_loss']} "
                                         "is behind the other trials' median")

        result = train_run(cfg, search, run_dir, progress=False, callbacks=[report], score_test=False)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        return result.best_valid_loss

    # a diverging setting (too high an lr) is a failed trial, not the end of the study
    study.optimize(objective, n_trials=trials, timeout=timeout, catch=(TrainingDiverged,))
    table = trials_table(study)
    study.trials_dataframe().to_csv(out / "study.csv", index=False)
    plot_history(study, out / "history.png")
    best_dir, metrics = finish_best(study, splits, out)
    return TuneResult(study, best_dir, metrics, table)


def _search_splits(splits: DatasetSplits) -> DatasetSplits:
    """The splits a trial sees: class names fixed from train and valid, so the best trial's
    model fits the full data when its test split is scored (reading test labels would count)."""
    if splits.task != "classification" or splits.class_names:
        return splits
    classes = int(max(int(splits.train.labels.max()), int(splits.valid.labels.max()))) + 1
    return dataclasses.replace(splits, class_names=[str(i) for i in range(classes)])


def finish_best(study: Any, splits: DatasetSplits, out: Path) -> tuple[Path | None, dict[str, Any]]:
    """Copy the best trial's run folder to OUT/best and score it on valid and test, once."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise UserError(
            f"no trial of study {study.study_name!r} finished (all pruned, failed or still running); "
            "run more --trials or widen the search space"
        )
    best = study.best_trial
    source = Path(best.user_attrs.get("run_dir", ""))
    if not (source / "last.pt").is_file():
        print(
            f"emofuse: the best trial ({best.number}) ran on "
            f"{best.user_attrs.get('host', 'another machine')} "
            f"in {source}; its run folder is not here, so {out / 'best'} was not made",
            file=sys.stderr,
        )
        return None, {}
    target = out / "best"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    config = TrainConfig.load(target / "config.json")
    # resuming a finished run trains nothing: it ends the way every run ends, scoring test once
    result = train_run(config, _search_splits(splits), target, resume=True, progress=False)
    return target, result.metrics


def trials_table(study: Any) -> str:
    """Markdown: one row per trial, its state, value (best validation loss), epochs and values."""
    keys = sorted({k for t in study.trials for k in t.params})
    lines = ["| trial | state | best valid loss | epochs | " + " | ".join(keys) + " |",
             "|" + "---|" * (4 + len(keys))]
    best = _best_number(study)
    for t in study.trials:
        value = "" if t.value is None else f"{t.value:.4f}" + (" *" if t.number == best else "")
        epochs = t.user_attrs.get("epochs_run", len(t.intermediate_values) or "")
        cells = [_fmt(t.params.get(k, "")) for k in keys]
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value} | {epochs} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _best_number(study: Any) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no finished trial yet
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot_history(study: Any, path: Path) -> None:
    """Each trial's best validation loss and the best so far, pruned trials at their last report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    done = [(t.number, t.value) for t in study.trials if t.value is not None and math.isfinite(t.value)]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in study.trials
              if t.state.name == "PRUNED" and t.intermediate_values]
    if done:
        ax.plot(*zip(*done), "o", label="trial")
        best, running = [], math.inf
        for n, v in done:
            running = min(running, v)
            best.append((n, running))
        ax.step(*zip(*best), where="post", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="grey", label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation loss")
    ax.set_title(f"study {study.study_name}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
