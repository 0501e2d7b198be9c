"""emofuse against MMSA 2.2.1, side by side: time per step, peak memory, and accuracy on the same data.

Runs in the benchmark's own environment (MMSA is not an emofuse dependency):

    bash benchmarks/setup_mmsa.sh                       # makes .venv-bench once
    .venv-bench/bin/python benchmarks/vs_mmsa.py --quick
    .venv-bench/bin/python benchmarks/vs_mmsa.py --rounds 3 --steps 4
    .venv-bench/bin/python benchmarks/vs_mmsa.py --accuracy --seeds 0 1 2 --epochs 8
    .venv-bench/bin/python benchmarks/vs_mmsa.py --epoch --rounds 2

Speed. For TFN, LMF, MFN, MCTN and MulT, MMSA's model is built by MMSA's own code (AMIO) from
its MOSI regression configuration (config/config_regression.json, the EasyDict that
`MMSA.config.get_config_regression` returns, plus the fields MMSA's runner adds: train_mode,
device, feature_dims, seq_lens); emofuse's model of the same name by `create_model` with its
defaults (emofuse's MOSI configuration). Both get identical MOSI-shaped random batches (same seed):
batch 32, text 50 x 768, audio 5-d, vision 20-d, aligned 50/50/50 or unaligned text 50 / audio 375
/ vision 500, every step real (MMSA ignores masks, so emofuse gets full masks). A training step is
forward + L1 + backward + Adam step (MCTN: each model's own loss, which includes the L1); inference
is a forward under torch.inference_mode in eval mode. Every measurement runs in its own
subprocess with torch pinned to 1 thread; within a round MMSA and emofuse alternate, and the
order flips each round. Reported: the median per-step time over all rounds, the emofuse / MMSA
ratio, and peak memory as the subprocess's max RSS (and the part above the RSS it had before
building the model: MMSA's process also imports transformers).

How each side's inputs are fed, exactly:
- text: MMSA's MOSI configs for these five models have use_bert false (or absent), so MMSA's
  loader gives them the pickle's 50 x 768 text features, not BERT token ids (3 x 50); both sides
  get the same 50 x 768 float tensor here.
- audio/vision for TFN, LMF and MFN: their configs set need_normalized, so MMSA's loader averages
  audio and vision over time (padding included) before the model sees them; the MMSA side here
  gets that same mean (computed outside the timed step, as MMSA's loader does it once). MFN's
  config also sets need_model_aligned, so AMIO's avg_pool AlignSubNet stretches them back to 50
  steps. emofuse's models take the sequences and do their own (masked) reduction inside the step.
- MCTN: MMSA's forward zero-pads every modality to 768 features and truncates every sequence to
  its first 50 steps (max_seq_len), so its unaligned run sees only the first 50 audio/vision
  frames; emofuse's averages them onto the text steps.
- MulT: each side with its own configuration (MMSA MOSI: d 50, 10 heads, 4 levels, conv
  kernel 5; emofuse: d 30, 5 heads, 5 layers, kernel 1 as the paper's reference).

MMSA's CPU path, worked around here without editing installed files:
- MMSA/__init__.py imports its training runner (pandas, pynvml, scikit-learn); the model and
  config modules are imported without it (`import_mmsa`), so the venv needs only
  transformers and easydict besides torch;
- MCTN's Seq2Seq hard-codes device 'cuda' for its output buffer: its constructor is wrapped to
  use the CPU (`_patch_mctn_device`);
- MulT's trainer passes verbose= to ReduceLROnPlateau, which torch 2.13 rejects: MMSA's trainers
  are not used (both sides run this file's loop), so it does not arise; `_patch_scheduler_verbose`
  drops the argument should MMSA's trains module be imported.
- Unaligned MulT at batch 32 takes MMSA about 12.7 GiB and ~50 s a step: it runs with
  `--mmsa-mult-unaligned-steps` steps (default 2, no warm-up) and only when the machine has
  `--mmsa-mult-unaligned-min-gib` of memory available; otherwise the row says it was skipped.

A training epoch at MOSI's real lengths (--epoch). The per-step table above pads every clip to
50 words, which is MMSA's whole workload but not emofuse's: emofuse trims each batch to its
longest real clip, and with `train --bucket` batches clips of similar length together. Here each
side trains one epoch over a MOSI-shaped training split whose clip lengths are the real MOSI
training split's word counts (../shared/data/mosi/label.csv, 1,284 clips, mean 12 words, capped at
50), aligned layout, random features (zero past each clip's length, as in MMSA's pickles):
- MMSA: its loader's fixed 50-step arrays in shuffled batches of 32 (audio/vision time-means over
  all 50 steps where need_normalized, as its loader computes them);
- emofuse: `MultimodalDataset.batches` as the trainer calls it, shuffled batches of 32 trimmed to
  their longest clip, without (`emofuse`) and with (`emofuse --bucket`) length bucketing, and the
  latter with the fused Adam kernel (`--adam fused`; the same update, computed in one kernel).
emofuse's models respect the masks, so what they compute for a clip does not depend on its
batch-mates' padding (tests check it); MMSA's TFN/MFN/MulT run their text LSTM or attention over
the padding. Reported: seconds per epoch (the first step, a warm-up, left out on every side), mean
ms per step, the mean number of steps a batch is padded to, the ratio to MMSA and peak memory.

Accuracy (--accuracy). Both implementations train on the same SYNTHETIC MOSI-shaped regression
set (emofuse.data.synthetic with 768/5/20 features by default, `--dims` to change them, and a
planted signal; every clip full length, shorter than MOSI's 50 words to keep it fast) for the
same epochs, batch, learning rate (MMSA's MOSI lr for the model) and gradient clipping (MMSA's,
where it has one), plain Adam, the same shuffling per seed; test MAE and Acc-2 (non-zero labels,
MMSA's definition) are reported per model as mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from typing import Any

MOSI_DIMS = {"text": 768, "audio": 5, "vision": 20}
LAYOUTS = {
    "aligned": {"text": 50, "audio": 50, "vision": 50},
    "unaligned": {"text": 50, "audio": 375, "vision": 500},
}
MODELS = ("tfn", "lmf", "mfn", "mctn", "mult")
SIDES = ("mmsa", "emofuse")
BATCH = 32


# ---------------------------------------------------------------------------- MMSA side
def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _patch_mctn_device(mctn_module: types.ModuleType) -> None:
    """MMSA's MCTN builds Seq2Seq(..., 'cuda'): use the CPU when there is no CUDA."""
    import torch

    seq2seq = mctn_module.Seq2Seq
    original = seq2seq.__init__

    def init(self: Any, encoder: Any, decoder: Any, device: Any, lengths: Any = None) -> None:
        original(self, encoder, decoder, device if torch.cuda.is_available() else "cpu", lengths)

    seq2seq.__init__ = init


def _patch_scheduler_verbose() -> None:
    """torch 2.13's ReduceLROnPlateau has no verbose=; MMSA's MulT trainer passes it."""
    import torch.optim.lr_scheduler as sched

    original = sched.ReduceLROnPlateau.__init__
    if getattr(original, "_drops_verbose", False):
        return

    def init(self: Any, *args: Any, verbose: Any = None, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

    init._drops_verbose = True  # type: ignore[attr-defined]
    sched.ReduceLROnPlateau.__init__ = init


def import_mmsa() -> tuple[Any, Any]:
    """MMSA's `get_config_regression` and `AMIO`, without running MMSA/__init__.py."""
    spec = importlib.util.find_spec("MMSA")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "MMSA is not installed here: run benchmarks/setup_mmsa.sh and use .venv-bench/bin/python"
        )
    if "MMSA" not in sys.modules:
        package = types.ModuleType("MMSA")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["MMSA"] = package
    from MMSA.config import get_config_regression
    from MMSA.models import AMIO
    from MMSA.models.singleTask import MCTN as mctn_module

    _patch_mctn_device(sys.modules[mctn_module.__module__])
    _patch_scheduler_verbose()
    return get_config_regression, AMIO


class MMSASide:
    """MMSA's model as MMSA's runner builds and feeds it."""

    def __init__(self, name: str, lengths: dict[str, int], dims: dict[str, int] | None = None) -> None:
        get_config_regression, amio = import_mmsa()
        dims = dims or MOSI_DIMS
        args = get_config_regression(name, "mosi")
        # the fields MMSA's runner (run.py) adds before building the model
        args.train_mode = "regression"
        args.device = "cpu"
        args.feature_dims = [dims["text"], dims["audio"], dims["vision"]]
        args.seq_lens = [lengths["text"], lengths["audio"], lengths["vision"]]
        self.args = args
        self.name = name
        self.model = amio(args)
        self.lr = float(args.get("learning_rate", args.get("init_lr", 1e-3)))
        self.grad_clip = float(args.get("grad_clip", 0.0) or 0.0)

    def prepare(self, feats: dict[str, Any]) -> dict[str, Any]:
        """What MMSA's loader hands the model (audio/vision time-means where need_normalized)."""
        out = dict(feats)
        if self.args.get("need_normalized"):
            for m in ("audio", "vision"):
                out[m] = feats[m].mean(1, keepdim=True)
        return out

    def forward(self, feats: dict[str, Any], labels: Any) -> tuple[Any, Any]:
        """(prediction B, the full training loss when the model computes its own, else None)."""
        t, a, v = feats["text"], feats["audio"], feats["vision"]
        if self.name == "mctn":
            loss, pred = self.model(t, a, v, labels.view(-1, 1), lengths=None)
            return pred.view(-1), loss
        return self.model(t, a, v)["M"].view(-1), None


# MMSA's MOSI MulT configuration in emofuse's option names (--mult-config mmsa), for checking that
# the two implementations agree at one configuration. Not mappable: MMSA's temporal conv kernel
# of 5 (emofuse projects with kernel 1, as the paper's reference code) and its text_dropout 0.5.
MULT_AS_MMSA = {
    "d": 50, "heads": 10, "layers": 4, "attn_dropout": 0.3, "attn_dropout_audio": 0.2,
    "attn_dropout_vision": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0, "embed_dropout": 0.2,
    "out_dropout": 0.5,
}


class EmofuseSide:
    def __init__(
        self,
        name: str,
        lengths: dict[str, int],
        mult_config: str = "emofuse",
        dims: dict[str, int] | None = None,
    ) -> None:
        from emofuse.models import ModelSpec, create_model

        spec = ModelSpec(("text", "audio", "vision"), dict(dims or MOSI_DIMS), dict(lengths))
        options = MULT_AS_MMSA if name == "mult" and mult_config == "mmsa" else {}
        self.model = create_model(name, spec, **options)
        self.name = name

    def prepare(self, feats: dict[str, Any]) -> Any:
        import torch

        from emofuse.data.dataset import Batch

        masks = {m: torch.ones(x.shape[:2], dtype=torch.bool) for m, x in feats.items()}
        n = next(iter(feats.values())).shape[0]
        return Batch(dict(feats), masks, torch.zeros(n), torch.arange(n))

    def forward(self, batch: Any, labels: Any) -> tuple[Any, Any]:
        import torch.nn.functional as F

        out = self.model(batch)
        if out.aux_loss is None:
            return out.prediction, None
        return out.prediction, F.l1_loss(out.prediction, labels) + out.aux_loss


def make_side(side: str, name: str, lengths: dict[str, int]) -> MMSASide | EmofuseSide:
    return MMSASide(name, lengths) if side == "mmsa" else EmofuseSide(name, lengths)


def random_batch(lengths: dict[str, int], seed: int) -> tuple[dict[str, Any], Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    feats = {
        m: torch.randn(BATCH, lengths[m], MOSI_DIMS[m], generator=g) for m in ("text", "audio", "vision")
    }
    labels = torch.rand(BATCH, generator=g) * 6 - 3
    return feats, labels


def make_optimizer(params: Any, lr: float, adam: str) -> Any:
    import torch

    kind = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[adam]
    return torch.optim.Adam(params, lr=lr, **kind)


# ---------------------------------------------------------------------------- one measurement
def timed_train_step(impl: MMSASide | EmofuseSide, opt: Any, inputs: Any, labels: Any) -> float:
    """Seconds for forward + loss (L1, or the model's own) + backward + optimiser step."""
    import torch.nn.functional as F

    start = time.perf_counter()
    pred, own = impl.forward(inputs, labels)
    loss = own if own is not None else F.l1_loss(pred, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def measure(side: str, name: str, layout: str, mode: str, steps: int, warmup: int, adam: str) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    lengths = LAYOUTS[layout]
    rss_before = _rss_mib()
    impl = make_side(side, name, lengths)
    feats, labels = random_batch(lengths, seed=1)
    inputs = impl.prepare(feats)
    model = impl.model
    times = []
    if mode == "train":
        model.train()
        opt = make_optimizer(model.parameters(), 1e-3, adam)
        for i in range(warmup + steps):
            seconds = timed_train_step(impl, opt, inputs, labels)
            if i >= warmup:
                times.append(seconds)
    else:
        model.eval()
        with torch.inference_mode():
            for i in range(warmup + steps):
                start = time.perf_counter()
                impl.forward(inputs, labels)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    return {
        "side": side,
        "model": name,
        "layout": layout,
        "mode": mode,
        "ms": [t * 1000 for t in times],
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_mib": rss_before,
        "params": sum(p.numel() for p in model.parameters()),
    }


# ---------------------------------------------------------------------------- epoch at real lengths
EPOCH_SIDES = ("mmsa", "emofuse", "emofuse --bucket", "emofuse --bucket --adam fused")


def mosi_train_lengths(label_csv: str) -> list[int]:
    """Word counts of MOSI's training split (label.csv `text`, mode 'train'), capped at 50."""
    import csv

    with open(label_csv, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"mode", "text"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"{label_csv}: no column(s) {sorted(missing)}; --epoch needs MOSI's label.csv")
        rows = [r for r in reader if r["mode"] == "train"]
    if not rows:
        raise SystemExit(f"{label_csv}: no rows with mode 'train'")
    return [max(1, min(LAYOUTS["aligned"]["text"], len(r["text"].split()))) for r in rows]


def measure_epoch(side: str, name: str, word_counts: list[int], seed: int) -> dict:
    import torch

    from emofuse.data.dataset import MultimodalDataset

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    lengths = LAYOUTS["aligned"]
    n = len(word_counts)
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(word_counts)
    real = torch.arange(lengths["text"])[None, :] < counts[:, None]  # N x 50, prefix masks
    feats = {m: torch.randn(n, lengths[m], MOSI_DIMS[m], generator=g) * real[..., None] for m in MOSI_DIMS}
    labels = torch.rand(n, generator=g) * 6 - 3
    rss_before = _rss_mib()
    impl = make_side("mmsa" if side == "mmsa" else "emofuse", name, lengths)
    model = impl.model
    model.train()
    opt = make_optimizer(model.parameters(), 1e-3, "fused" if side.endswith("--adam fused") else "default")
    order = torch.Generator().manual_seed(seed + 1)
    if side == "mmsa":
        perm = torch.randperm(n, generator=order)
        batches = [(impl.prepare({m: x[idx] for m, x in feats.items()}), labels[idx], lengths["text"])
                   for idx in (perm[i : i + BATCH] for i in range(0, n, BATCH)) if len(idx) > 1]
    else:
        data = MultimodalDataset(features=feats, lengths={m: counts for m in MOSI_DIMS}, labels=labels,
                                 ids=[str(i) for i in range(n)], raw_text=[""] * n, source="MOSI-shaped")
        batches = [(b, b.labels, b.features["text"].shape[1])
                   for b in data.batches(BATCH, shuffle=True, generator=order, bucket="--bucket" in side)
                   if len(b.labels) > 1]  # BatchNorm (TFN/LMF subnets) needs two clips
    times = [timed_train_step(impl, opt, inputs, y) for inputs, y, _ in batches]
    return {
        "side": side,
        "model": name,
        "epoch_s": sum(times[1:]),
        "ms_per_step": 1000 * statistics.mean(times[1:]),
        "steps": len(times),
        "padded_to": statistics.mean(b[2] for b in batches),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_mib": rss_before,
    }


def epoch(args: argparse.Namespace) -> None:
    word_counts = mosi_train_lengths(args.mosi_labels)
    results: dict[tuple, list[dict]] = {}
    errors: dict[tuple, str] = {}
    for r in range(args.rounds):
        for name in args.models:
            for side in EPOCH_SIDES if r % 2 == 0 else EPOCH_SIDES[::-1]:
                payload = {
                    "kind": "epoch",
                    "side": side,
                    "model": name,
                    "word_counts": word_counts,
                    "seed": r,
                }
                res = run_child(payload, args.timeout)
                if "error" in res:
                    errors[(name, side)] = res["error"]
                    print(f"round {r}: {name} {side}: {res['error']}", file=sys.stderr)
                    continue
                results.setdefault((name, side), []).append(res)
                print(
                    f"round {r}: {name} {side}: {res['epoch_s']:.1f} s/epoch, "
                    f"{res['ms_per_step']:.0f} ms/step, "
                    f"padded to {res['padded_to']:.1f}, peak {res['peak_mib']:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"\nCPU, 1 thread, one training epoch over a MOSI-shaped split with MOSI's real training-split "
          f"lengths ({len(word_counts)} clips, mean {statistics.mean(word_counts):.1f} words), aligned, "
          f"batch {BATCH}, plain Adam; median over {args.rounds} round(s), one subprocess each, sides "
          "alternating; ratio = emofuse / MMSA seconds per epoch; peak = max RSS of the subprocess")
    print("| model | side | s / epoch | ms / step | padded to (steps) | / MMSA | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        base = results.get((name, "mmsa"))
        base_s = statistics.median(r["epoch_s"] for r in base) if base else None
        for side in EPOCH_SIDES:
            runs = results.get((name, side))
            if not runs:
                print(f"| {name} | {side} | {errors.get((name, side), 'not run')} | | | | |")
                continue
            s_ep = statistics.median(r["epoch_s"] for r in runs)
            ratio = f"{s_ep / base_s:.2f}x" if base_s else "-"
            print(
                f"| {name} | {side} | {s_ep:.1f} | {statistics.median(r['ms_per_step'] for r in runs):.0f} | "
                f"{runs[0]['padded_to']:.1f} | {ratio} | {max(r['peak_mib'] for r in runs):.0f} |"
            )


# ---------------------------------------------------------------------------- accuracy
def train_accuracy(
    side: str, name: str, seed: int, epochs: int, n_train: int, n_test: int, words: int, mult_config: str,
    dims: dict[str, int],
) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from emofuse.data.synthetic import SyntheticConfig, make_synthetic
    from emofuse.metrics.regression import acc2_non0, mae

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = SyntheticConfig(
        n_train=n_train, n_valid=2, n_test=n_test, max_words=words, min_words=words,
        text_dim=dims["text"], audio_dim=dims["audio"], vision_dim=dims["vision"], seed=seed,
    )
    data = make_synthetic(cfg)
    lengths = {m: words for m in dims}
    # the learning rate and clipping of MMSA's MOSI config, for both sides
    reference = MMSASide(name, lengths, dims) if side == "mmsa" else None
    if reference is None:
        torch.manual_seed(seed)
        get_config_regression = _config_only()
        args = get_config_regression(name, "mosi")
        lr = float(args.get("learning_rate", args.get("init_lr", 1e-3)))
        clip = float(args.get("grad_clip", 0.0) or 0.0)
        impl: MMSASide | EmofuseSide = EmofuseSide(name, lengths, mult_config, dims)
    else:
        impl, lr, clip = reference, reference.lr, reference.grad_clip
    model = impl.model
    opt = make_optimizer(model.parameters(), lr, "default")
    train, test = data.train, data.test
    x_train = {m: train.features[m] for m in dims}
    y_train = train.labels.float()
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=order)
        for i in range(0, len(perm), BATCH):
            idx = perm[i : i + BATCH]
            if len(idx) < 2:
                continue  # BatchNorm (TFN/LMF subnets) needs two clips
            inputs = impl.prepare({m: x[idx] for m, x in x_train.items()})
            pred, own = impl.forward(inputs, y_train[idx])
            loss = own if own is not None else F.l1_loss(pred, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    preds = []
    y_test = test.labels.float()
    with torch.inference_mode():
        # in order, batches of 32: MMSA's MCTN mixes a batch's clips (it recurs over the batch axis)
        for i in range(0, len(y_test), BATCH):
            inputs = impl.prepare({m: test.features[m][i : i + BATCH] for m in dims})
            pred, _ = impl.forward(inputs, y_test[i : i + BATCH])
            preds.append(pred.detach())
    p = torch.cat(preds).numpy().astype(np.float64)
    y = y_test.numpy().astype(np.float64)
    # the floor: a model whose MAE is not under this one has learned nothing
    mean_mae = mae(np.full_like(y, float(y_train.mean())), y)
    return {
        "side": side,
        "model": name,
        "seed": seed,
        "mae": mae(p, y),
        "mean_mae": mean_mae,
        "acc2": acc2_non0(p, y)[0],
        "train_s": train_s,
        "lr": lr,
        "clip": clip,
    }


def _config_only() -> Any:
    get_config_regression, _ = import_mmsa()
    return get_config_regression


# ---------------------------------------------------------------------------- driver
def run_child(payload: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(payload)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"error": lines[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> None:
    results: dict[tuple, list[dict]] = {}
    skipped: dict[tuple, str] = {}
    for r in range(args.rounds):
        for layout in args.layouts:
            for name in args.models:
                for mode in args.modes:
                    order = SIDES if r % 2 == 0 else SIDES[::-1]
                    for side in order:
                        key = (name, layout, mode, side)
                        steps, warmup, timeout = args.steps, 1, args.timeout
                        if side == "mmsa" and name == "mult" and layout == "unaligned":
                            if r > 0 or args.mmsa_mult_unaligned_steps <= 0:
                                if r == 0:
                                    skipped[key] = "skipped (--mmsa-mult-unaligned-steps 0)"
                                continue
                            if _available_gib() < args.mmsa_mult_unaligned_min_gib:
                                skipped[key] = (
                                    f"skipped: under {args.mmsa_mult_unaligned_min_gib} GiB available"
                                )
                                continue
                            steps, warmup, timeout = args.mmsa_mult_unaligned_steps, 0, 900.0
                        payload = {"kind": "speed", "side": side, "model": name, "layout": layout,
                                   "mode": mode, "steps": steps, "warmup": warmup, "adam": args.adam}
                        res = run_child(payload, timeout)
                        if "error" in res:
                            skipped[key] = res["error"]
                            print(f"round {r}: {key}: {res['error']}", file=sys.stderr)
                            continue
                        results.setdefault(key, []).append(res)
                        print(f"round {r}: {name} {layout} {mode} {side}: "
                              f"{statistics.median(res['ms']):.0f} ms/step, peak {res['peak_mib']:.0f} MiB",
                              file=sys.stderr, flush=True)
    print(
        f"\nCPU, torch {args.threads_note}, batch {BATCH}, Adam ({args.adam}) for both sides; median ms per "
        f"step over {args.rounds} round(s) x {args.steps} step(s) after 1 warm-up, one subprocess each, "
        "MMSA and emofuse alternating; peak = max RSS of the subprocess (in brackets: above its RSS "
        "before building the model)"
    )
    print(
        "| model | layout | mode | emofuse ms | MMSA ms | emofuse / MMSA | emofuse peak MiB | MMSA peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for layout in args.layouts:
            for mode in args.modes:
                cells = {}
                for side in SIDES:
                    key = (name, layout, mode, side)
                    runs = results.get(key)
                    if not runs:
                        cells[side] = (None, skipped.get(key, "not run"), "")
                        continue
                    ms = statistics.median([t for run in runs for t in run["ms"]])
                    peak = max(run["peak_mib"] for run in runs)
                    above = max(run["peak_mib"] - run["base_mib"] for run in runs)
                    cells[side] = (ms, f"{ms:.0f}", f"{peak:.0f} ({above:.0f})")
                e, m = cells["emofuse"], cells["mmsa"]
                ratio = f"{e[0] / m[0]:.2f}x" if e[0] and m[0] else "-"
                print(f"| {name} | {layout} | {mode} | {e[1]} | {m[1]} | {ratio} | {e[2]} | {m[2]} |")


def accuracy(args: argparse.Namespace) -> None:
    rows: dict[tuple, list[dict]] = {}
    for seed in args.seeds:
        for name in args.models:
            for side in SIDES if seed % 2 == 0 else SIDES[::-1]:
                payload = {
                    "kind": "accuracy",
                    "side": side,
                    "model": name,
                    "seed": seed,
                    "epochs": args.epochs,
                    "n_train": args.n_train,
                    "n_test": args.n_test,
                    "words": args.words,
                    "mult_config": args.mult_config,
                    "dims": args.dims,
                }
                res = run_child(payload, None)
                if "error" in res:
                    print(f"{name} {side} seed {seed}: {res['error']}", file=sys.stderr)
                    continue
                rows.setdefault((name, side), []).append(res)
                print(f"{name} {side} seed {seed}: MAE {res['mae']:.3f} Acc-2 {res['acc2']:.3f} "
                      f"({res['train_s']:.0f} s)", file=sys.stderr, flush=True)

    def stat(runs: list[dict], k: str) -> str:
        vals = [r[k] for r in runs]
        spread = f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else ""
        return f"{statistics.mean(vals):.3f}{spread}"

    dims = "/".join(str(v) for v in args.dims.values())
    print(f"\nSYNTHETIC MOSI-shaped regression (emofuse.data.synthetic, text/audio/vision {dims}, "
          f"{args.words} steps, {args.n_train} train / {args.n_test} test clips), {args.epochs} epochs, "
          f"batch {BATCH}, plain Adam at MMSA's MOSI lr, MMSA's grad clip; seeds {args.seeds}; "
          "mean ± sd over seeds")
    everything = [r for runs in rows.values() for r in runs]
    if everything:
        print(
            "Predicting the training mean gives test MAE "
            f"{statistics.mean(r['mean_mae'] for r in everything):.3f} "
            "(a model under it has learned something); MulT's emofuse configuration: " + args.mult_config
        )
    print(
        "| model | lr | emofuse MAE | MMSA MAE | emofuse Acc-2 | MMSA Acc-2 "
        "| emofuse train s | MMSA train s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        e, m = rows.get((name, "emofuse"), []), rows.get((name, "mmsa"), [])
        if not e or not m:
            print(f"| {name} | | {'failed' if not e else ''} | {'failed' if not m else ''} | | | | |")
            continue
        print(f"| {name} | {e[0]['lr']:g} | {stat(e, 'mae')} | {stat(m, 'mae')} | {stat(e, 'acc2')} | "
              f"{stat(m, 'acc2')} | {stat(e, 'train_s')} | {stat(m, 'train_s')} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per subprocess, after 1 warm-up")
    parser.add_argument("--adam", default="default", choices=["default", "foreach", "fused"],
                        help="Adam implementation, the same for both sides")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    parser.add_argument("--mmsa-mult-unaligned-steps", type=int, default=2,
                        help="timed steps for MMSA's unaligned MulT (~50 s and 12.7 GiB each); 0 skips it")
    parser.add_argument("--mmsa-mult-unaligned-min-gib", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, 1 step, MMSA's unaligned MulT skipped; with --accuracy: "
                             "1 seed, 1 epoch, small data")
    parser.add_argument("--accuracy", action="store_true", help="train both on the same data and compare")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=480)
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument(
        "--dims",
        default="768,5,20",
        help="--accuracy: text,audio,vision feature sizes of the synthetic set (MOSI's by default)",
    )
    parser.add_argument("--mult-config", default="emofuse", choices=["emofuse", "mmsa"],
                        help="--accuracy: emofuse's MulT with its own defaults, or with MMSA's MOSI settings "
                             "where emofuse has the option (MULT_AS_MMSA)")
    parser.add_argument(
        "--epoch",
        action="store_true",
        help="one training epoch at MOSI's real clip lengths, emofuse's batching against MMSA's",
    )
    parser.add_argument(
        "--mosi-labels",
        help="MOSI's label.csv, for --epoch's clip lengths (default: the shared data's, found as "
        "emofuse.data.shared_data finds it)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        p = json.loads(args.child)
        if p["kind"] == "speed":
            out = measure(p["side"], p["model"], p["layout"], p["mode"], p["steps"], p["warmup"], p["adam"])
        elif p["kind"] == "epoch":
            out = measure_epoch(p["side"], p["model"], p["word_counts"], p["seed"])
        else:
            out = train_accuracy(p["side"], p["model"], p["seed"], p["epochs"], p["n_train"], p["n_test"],
                                 p["words"], p["mult_config"], p["dims"])
        print(json.dumps(out))
        return
    import_mmsa()  # fail early, with the set-up hint, outside the benchmark's venv
    try:
        sizes = [int(x) for x in args.dims.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != 3 or min(sizes) < 1:
        parser.error(f"--dims {args.dims!r}: give three positive sizes, text,audio,vision (e.g. 768,5,20)")
    args.dims = dict(zip(("text", "audio", "vision"), sizes))
    args.threads_note = "1 thread"
    if args.quick:
        args.rounds, args.steps, args.mmsa_mult_unaligned_steps = 1, 1, 0
        if args.accuracy:
            args.seeds, args.epochs, args.n_train, args.n_test, args.words = args.seeds[:1], 1, 64, 64, 10
    if args.accuracy:
        accuracy(args)
    elif args.epoch:
        if args.mosi_labels is None:
            from emofuse.data.shared_data import shared_data_file

            found = shared_data_file("mosi", "label.csv")
            if found is None:
                raise SystemExit(
                    "--epoch needs MOSI's label.csv for the clip lengths: none in the shared data "
                    "(../shared/data/mosi or $EMOFUSE_SHARED_DATA); pass --mosi-labels PATH"
                )
            args.mosi_labels = str(found)
        elif not os.path.isfile(args.mosi_labels):
            raise SystemExit(f"--mosi-labels {args.mosi_labels}: no such file")
        epoch(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
