"""Seconds per epoch and utterances per second of a text model on MOSI's training texts.

Frozen (encoder under no_grad) vs fine-tuned (the whole encoder trains), MiniLM vs MPNet, with
a single-modality late-fusion head on top (the smallest model that reads words). Batches are
length-bucketed, as in training. Texts come from ../shared/data/mosi/label.csv when present,
else from the synthetic dataset's stand-in transcripts (the table says which).

    python benchmarks/text_encoder_speed.py --steps 10 --encoders minilm mpnet --threads 2

Epoch time is extrapolated from `--steps` timed training steps after one warm-up step; the
evaluation rate is measured with torch.inference_mode over the same number of batches.
"""

from __future__ import annotations

import argparse
import time

import torch

from emofuse.data.dataset import DatasetSplits


def load_texts() -> tuple[DatasetSplits, str]:
    from emofuse.data.loading import TextOptions, load_splits
    from emofuse.data.shared_data import shared_data_file

    label_csv = shared_data_file("mosi", "label.csv")
    if label_csv is not None:
        return load_splits(str(label_csv), TextOptions(model=None)), "MOSI label.csv"
    return load_splits("synthetic"), "synthetic stand-in texts"


def measure(encoder: str, finetune: str, splits: DatasetSplits, steps: int, batch_size: int) -> dict:
    from emofuse.features.tokens import tokenize_splits
    from emofuse.models.factory import build_model, model_spec_for, text_encoder_config
    from emofuse.models.text_encoder import load_tokenizer_and_encoder
    from emofuse.training.config import TrainConfig
    from emofuse.training.optim import make_optimizer

    config = TrainConfig(
        model="late_fusion",
        modalities="T",
        text_encoder=encoder,
        text_finetune=finetune,
        batch_size=batch_size,
    )
    tokenizer, hf = load_tokenizer_and_encoder(encoder)
    data = tokenize_splits(splits.select_modalities(["text"]), tokenizer, text_encoder_config(config))
    model = build_model(config, model_spec_for(data, ("text",)), hf)
    optimizer = make_optimizer(config, model)
    gen = torch.Generator().manual_seed(0)
    batches = list(data.train.batches(batch_size, shuffle=True, generator=gen))[: steps + 1]
    model.train()

    def step(batch) -> None:
        loss = torch.nn.functional.l1_loss(model(batch).prediction, batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(batches[0])
    start = time.perf_counter()
    for b in batches[1:]:
        step(b)
    train_s = (time.perf_counter() - start) / steps
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for b in batches[1:]:
            model(b)
    eval_s = (time.perf_counter() - start) / steps
    n_train = len(data.train)
    return {
        "encoder": encoder,
        "mode": "frozen" if finetune == "none" else f"fine-tuned ({finetune})",
        "s_per_epoch": train_s * -(-n_train // batch_size),
        "train_utt_s": batch_size / train_s,
        "eval_utt_s": batch_size / eval_s,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=["minilm", "mpnet"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits, source = load_texts()
    rows = []
    for encoder in args.encoders:
        for finetune in ("none", "all"):
            try:
                rows.append(measure(encoder, finetune, splits, args.steps, args.batch_size))
            except Exception as err:  # e.g. mpnet not installed: say so, go on with the rest
                rows.append(
                    {"encoder": encoder, "mode": finetune, "error": f"{type(err).__name__}: {str(err)[:90]}"}
                )
    print(
        f"texts: {source} ({len(splits.train)} training utterances); {args.threads} thread(s), "
        f"batch {args.batch_size}, "
        f"epoch time from {args.steps} steps after a warm-up"
    )
    print("| encoder | mode | s / epoch | train utt/s | eval utt/s | parameters |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['encoder']} | {r['mode']} | {r['error']} | | | |")
        else:
            print(f"| {r['encoder']} | {r['mode']} | {r['s_per_epoch']:.1f} | {r['train_utt_s']:.1f} | "
                  f"{r['eval_utt_s']:.1f} | {r['params']:,} |")


if __name__ == "__main__":
    main()
