"""The RAVDESS reference the raw audio encoders are measured against: eGeMAPS functionals +
logistic regression.

    python benchmarks/ravdess_egemaps_lr.py --data path/to/RavdessDataSet

One openSMILE eGeMAPSv02 functionals vector (88 values) per speech clip; the split is emofuse's
(actors 1-16 train, 17-20 valid, 21-24 test); C is chosen on the validation actors; test is scored
once. Two rows: the features as they come, and standardised per speaker (each actor's clips
z-scored over that actor's own clips, the analogue of `-D speaker_norm=meanvar`). Prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a RAVDESS folder (Actor_NN/*.wav)")
    parser.add_argument("--cache", default="", help="an .npy file to keep the functionals in between runs")
    args = parser.parse_args()

    import opensmile
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler
    from tqdm.auto import tqdm

    from emofuse.data.ravdess import ACTOR_SPLITS, parse_name, ravdess_root

    root = ravdess_root(Path(args.data))
    if root is None:
        raise SystemExit(f"{args.data}: no Actor_NN folders, so not a RAVDESS dataset folder")
    wavs = [w for w in sorted(root.glob("Actor_[0-9][0-9]/*.wav")) if parse_name(w)["channel"] == 1]
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        features = np.load(cache)
    else:
        smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                feature_level=opensmile.FeatureLevel.Functionals)
        features = np.stack([smile.process_file(str(w)).to_numpy()[0] for w in tqdm(wavs, desc="eGeMAPS")])
        if cache is not None:
            np.save(cache, features)
    codes = [parse_name(w) for w in wavs]
    labels = np.array([c["emotion"] - 1 for c in codes])
    actors = np.array([c["actor"] for c in codes])
    split = {name: np.isin(actors, list(r)) for name, r in ACTOR_SPLITS.items()}

    print("| features | C (chosen on valid) | valid acc | test acc | test macro F1 |")
    print("|---|---|---|---|---|")
    for mode in ("as they come", "standardised per speaker"):
        x = features.astype(np.float64).copy()
        if mode != "as they come":
            for actor in np.unique(actors):
                mine = actors == actor
                x[mine] = (x[mine] - x[mine].mean(axis=0)) / (x[mine].std(axis=0) + 1e-8)
        x = StandardScaler().fit(x[split["train"]]).transform(x)
        best = None
        for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
            model = LogisticRegression(C=c, max_iter=5000).fit(x[split["train"]], labels[split["train"]])
            valid = float((model.predict(x[split["valid"]]) == labels[split["valid"]]).mean())
            if best is None or valid > best[0]:
                best = (valid, c, model)
        valid, c, model = best
        predicted = model.predict(x[split["test"]])
        test = float((predicted == labels[split["test"]]).mean())
        f1 = f1_score(labels[split["test"]], predicted, average="macro")
        print(
            f"| eGeMAPS functionals, {mode} | {c:g} | {100 * valid:.1f} | {100 * test:.1f} | {100 * f1:.1f} |"
        )


if __name__ == "__main__":
    main()
