"""`emofuse demo`: the main job on the embedded synthetic dataset, aligned and unaligned.

Trains both fusion-matched networks (the paper's `fusion_matched` and the `fusion_matched_xattn`
extension) and the two fast baselines briefly, each with its own recipe, on two planted sets:

- `synthetic`: audio and vision have one step per word, so even a per-step concatenation
  (EF-LSTM) can pair a word with the audio spoken with it;
- `synthetic-unaligned`: audio runs at 4 frames per word and vision at 2, so a model must match
  (or resample) steps across time to find the pairs.

Each table prints the test metrics next to the ceilings the planted structure allows:

- from the planted components (emofuse.data.synthetic): the noiseless label, and the best
  prediction without the interaction. These need the components themselves, which no model
  sees: every feature carries N(0, 0.3^2) noise, so a cue word or an audio marker is misread now
  and then;
- from the features (`feature_ceilings`): the Bayes prediction E[y | inputs], computed exactly
  from the generator's distributions, with and without the interaction term. This is the best
  any model can do with what it is given; the distance to it is what a model leaves on the table.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import MultimodalDataset
from emofuse.data.synthetic import CUE, MARKER, POLARITY, SHOWN, WEIGHTS, SyntheticConfig, make_synthetic
from emofuse.files import atomic_write_text
from emofuse.metrics import regression_metrics
from emofuse.reports.search import model_config
from emofuse.reports.tables import markdown_table, summary_row
from emofuse.training.config import TrainConfig
from emofuse.training.multiseed import REGRESSION_KEYS, train_seeds

DEMO_MODELS = ("fusion_matched", "fusion_matched_xattn", "ef_lstm", "late_fusion")
DEMO_DATA = ("synthetic", "synthetic-unaligned")
COLUMNS = ["acc2_has0", "acc2_non0", "f1_non0", "acc7", "mae", "corr"]



def _gauss(x: np.ndarray, mean: float | np.ndarray, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def _posterior_mean(
    x: np.ndarray, locs: list[float], prior: list[float], sd: float, values: list[float] | None = None
) -> np.ndarray:
    """E[value | x] for x = loc + N(0, sd^2), the loc drawn from `prior` (values default to locs)."""
    lik = np.stack([p * _gauss(x, loc, sd) for loc, p in zip(locs, prior)], -1)
    return (lik * np.asarray(values or locs)).sum(-1) / lik.sum(-1)


def feature_ceilings(data: MultimodalDataset, cfg: SyntheticConfig) -> dict[str, np.ndarray]:
    """The Bayes predictions from the inputs: E[y | features], with and without the interaction.

    The label is linear in independent components (up to the rarely active clip at +-3), each read
    from its own feature with Gaussian noise, so E[y | x] is the weighted sum of per-component
    posterior means: polarity and cues per word (three-point priors), the audio marker's sign per
    word, the tone (N(0, 1) prior, mean of the steps) and the vision strength (N(0, 1) prior,
    each step shown with probability 0.35; integrated on a grid). Unaligned frames are first
    averaged per word: a word's frames share its noise and add their own, so the mean is
    sufficient.
    """
    n, s = len(data), cfg.feature_noise
    text = data.features["text"].numpy().astype(np.float64)
    audio = data.features["audio"].numpy().astype(np.float64)
    vision = data.features["vision"].numpy().astype(np.float64)
    words = data.lengths["text"].numpy()
    mask = np.arange(text.shape[1])[None, :] < words[:, None]
    sd_a = sd_v = s
    if not cfg.aligned:
        audio = audio.reshape(n, -1, cfg.audio_rate, audio.shape[-1]).mean(2)
        vision = vision.reshape(n, -1, cfg.vision_rate, vision.shape[-1]).mean(2)
        sd_a, sd_v = np.hypot(s, s / np.sqrt(cfg.audio_rate)), np.hypot(s, s / np.sqrt(cfg.vision_rate))
    t_part = (_posterior_mean(text[..., 0], *POLARITY, s) * mask).sum(1) / 2.5
    cue = _posterior_mean(text[..., 1], *CUE, s)
    sign = _posterior_mean(audio[..., 1], [0.0, 1.0], [1 - MARKER, MARKER], sd_a, values=[1.0, -1.0])
    i_part = (cue * sign * mask).sum(1) / 2.0
    # tone: every step reads g + noise; Gaussian prior N(0, 1) shrinks the mean of the steps
    a_part = (audio[..., 0] * mask).sum(1) / (words + sd_a**2)
    grid = np.linspace(-5, 5, 801)
    log_post = np.tile(-0.5 * grid**2, (n, 1))
    for step in range(vision.shape[1]):
        x = vision[:, step, 0][:, None]
        like = SHOWN * _gauss(x, grid[None, :], sd_v) + (1 - SHOWN) * _gauss(x, 0.0, sd_v)
        log_post += np.where(mask[:, step, None], np.log(like), 0.0)
    post = np.exp(log_post - log_post.max(1, keepdims=True))
    v_part = (post * grid).sum(1) / post.sum(1)
    additive = WEIGHTS["T"] * t_part + WEIGHTS["A"] * a_part + WEIGHTS["V"] * v_part
    return {"full": np.clip(additive + WEIGHTS["I"] * i_part, -3, 3), "additive": np.clip(additive, -3, 3)}


def ceiling_rows(test: MultimodalDataset, cfg: SyntheticConfig) -> list[dict]:
    """Reference predictions (no learning involved): from the components, then from the features."""
    labels = test.labels.numpy()
    features = feature_ceilings(test, cfg)
    references = {
        "ceiling: noiseless label (needs the hidden components)": test.extras["oracle_full"],
        "ceiling: no interaction (hidden components)": test.extras["oracle_additive"],
        "Bayes from the inputs: E[y given features]": features["full"],
        "Bayes from the inputs without the interaction": features["additive"],
    }
    rows = []
    for name, pred in references.items():
        m = regression_metrics(np.asarray(pred), labels)
        rows.append({"model": name, **{k: m[k] for k in REGRESSION_KEYS}})
    return rows


def _train_one(
    data: str,
    model: str,
    epochs: int,
    seeds: list[int],
    out: Path,
    resume: bool,
    progress: bool,
    sizes: dict[str, int],
) -> dict[str, Any]:
    """One (dataset, model) job; runs in a worker process, which makes the data itself."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    splits = make_synthetic(_synthetic_config(data, sizes))
    base = TrainConfig(modalities="T+A+V", data=data, epochs=epochs, seed=seeds[0], threads=1)
    _, summary = train_seeds(
        model_config(base, model), splits, out / data / model, seeds, resume=resume, progress=progress
    )
    return {"test": summary["test"], "seconds": time.perf_counter() - start}


def _synthetic_config(data: str, sizes: dict[str, int] | None = None) -> SyntheticConfig:
    return SyntheticConfig(aligned=data != "synthetic-unaligned", **(sizes or {}))


# a model's training time on the demo data relative to ef_lstm's (measured: 6 / 29 / 23 / 17 s
# on synthetic at 12 epochs, one thread), for ordering the jobs
JOB_WEIGHT = {"fusion_matched_xattn": 5.0, "fusion_matched": 4.0, "late_fusion": 3.0, "ef_lstm": 1.0}


def _job_weight(job: tuple[str, str]) -> float:
    data, model = job
    return JOB_WEIGHT.get(model, 1.0) * (1.5 if data == "synthetic-unaligned" else 1.0)


def run_demo(
    out: Path,
    epochs: int = 12,
    seeds: list[int] | None = None,
    progress: bool = True,
    threads: int = 1,
    models: tuple[str, ...] = DEMO_MODELS,
    datasets: tuple[str, ...] = DEMO_DATA,
    resume: bool = False,
    workers: int = 2,
    sizes: dict[str, int] | None = None,
) -> dict[str, list[dict]]:
    """{dataset: table rows}; prints one table per dataset and writes results.md/.json.

    workers > 1 trains the (dataset, model) jobs in that many single-threaded processes;
    sizes: SyntheticConfig sizes (n_train, n_valid, n_test) other than the defaults.
    """
    seeds = seeds or [1]
    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    jobs = [(d, m) for d in datasets for m in models]
    if workers > 1:
        # the longest jobs first (unaligned data, then the attention models): the last job to
        # start is a short one, so neither worker idles while the other finishes a long one
        jobs.sort(key=_job_weight, reverse=True)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            futures = {
                job: pool.submit(_train_one, *job, epochs, seeds, out, resume, False, sizes or {})
                for job in jobs
            }
            done = {job: f.result() for job, f in futures.items()}
    else:
        done = {job: _train_one(*job, epochs, seeds, out, resume, progress, sizes or {}) for job in jobs}
    tables, results = [], {}
    for data in datasets:
        cfg = _synthetic_config(data, sizes)
        splits = make_synthetic(cfg)
        rows = [
            summary_row(m, done[(data, m)]["test"], seconds=f"{done[(data, m)]['seconds']:.0f}")
            for m in models
        ]
        rows.extend(ceiling_rows(splits.test, cfg))
        table = markdown_table(rows, COLUMNS + ["seconds"])
        heading = (f"{data} ({splits.describe()}): test split, T+A+V, {len(seeds)} seed(s), "
                   f"{epochs} epochs at most, each model's own recipe")
        print(f"\n{heading}\n\n{table}")
        tables.append(f"{heading}\n\n{table}\n")
        results[data] = rows
    atomic_write_text(out / "results.md", "\n".join(tables))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nrun folders and results.md in {out}")
    return results
