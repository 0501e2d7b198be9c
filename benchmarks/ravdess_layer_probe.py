"""Which Whisper-base layer carries emotion: a linear probe per layer on RAVDESS's validation actors.

    python benchmarks/ravdess_layer_probe.py --data path/to/RavdessDataSet

Each speech clip becomes the rows of `-D embeddings=whisper_base` (per hidden state of the frozen
encoder over the whole silence-trimmed clip: the mean and standard deviation over frames). For each
row (the convolutional stem = 0, transformer layers 1-6) and for all rows concatenated, logistic
regression is fitted on actors 1-16 and scored on actors 17-20, with C chosen on those same
validation actors: this is a diagnostic for choosing the recipe, so it never reads the test actors.
Two columns: the rows as they come, and standardised per speaker (`-D speaker_norm=meanvar`).
Prints a table.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a RAVDESS folder (Actor_NN/*.wav)")
    parser.add_argument("--cache", default=None, help="emofuse cache folder (default: the usual one)")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import emofuse.features.sources  # noqa: F401  (registers the whisper_base embedder)
    from emofuse.data.ravdess import RavdessConfig, load_ravdess

    columns = {}
    for norm in ("none", "meanvar"):
        splits = load_ravdess(args.data, RavdessConfig(embeddings="whisper_base", speaker_norm=norm),
                              cache=args.cache)
        train, valid = splits.train, splits.valid
        x_train, x_valid = train.features["audio"].numpy(), valid.features["audio"].numpy()
        y_train, y_valid = train.labels.numpy(), valid.labels.numpy()
        rows = list(range(x_train.shape[1])) + ["all"]
        scores = {}
        for row in rows:
            a = x_train.reshape(len(x_train), -1) if row == "all" else x_train[:, row]
            b = x_valid.reshape(len(x_valid), -1) if row == "all" else x_valid[:, row]
            scaler = StandardScaler().fit(a)
            a, b = scaler.transform(a), scaler.transform(b)
            scores[row] = max(
                (LogisticRegression(C=c, max_iter=3000).fit(a, y_train).predict(b) == y_valid).mean()
                for c in (0.003, 0.01, 0.03, 0.1)
            )
        columns[norm] = scores
    print("| Whisper-base hidden state | valid acc, as they come | valid acc, standardised per speaker |")
    print("|---|---|---|")
    for row in columns["none"]:
        name = "all, concatenated" if row == "all" else ("stem (conv)" if row == 0 else f"layer {row}")
        print(f"| {name} | {100 * columns['none'][row]:.1f} | {100 * columns['meanvar'][row]:.1f} |")


if __name__ == "__main__":
    main()
