"""Seconds per protocol training on a frozen-feature bank (the reused compiled head of helpers.train.ReusableFit).

A synthetic bank (96 training, 48 validation and 48 test rows of 1,280 features, four sources)
isolates Keras's fixed costs from data size: the first training builds and traces the head, the
next ones reuse it. Results and their date: benchmarks/README.md.

    .venv/bin/python benchmarks/bench_protocol_heads.py
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd

from helpers import protocols


def synthetic_bank(seed: int = 0) -> protocols.FeatureBank:
    rng = np.random.default_rng(seed)

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame({"label": ["real", "fake"] * (n // 2), "path": [f"p{i}" for i in range(n)],
                             "source": ["ffhq", "sd21", "unsplash", "stylegan2"] * (n // 4)})

    frames = {"train": frame(96), "val": frame(48), "test": frame(48)}
    arrays = {split: {k: rng.normal(size=(len(f), 1280)).astype(np.float32) for k in ("clean", "flipped", "augment:0")}
              for split, f in frames.items()}
    return protocols.FeatureBank(64, frames, arrays)


def main() -> None:
    bank = synthetic_bank()
    recipe = protocols.Recipe(name="bench", epochs=2, augment_copies=1, tta_flip=True)
    with tempfile.TemporaryDirectory() as out:
        for i in range(4):
            start = time.perf_counter()
            trained = bank.train(recipe, out, seed=42)
            middle = time.perf_counter()
            bank.score(trained, "test")
            print(f"training {i + 1}: {middle - start:.2f} s, scoring {time.perf_counter() - middle:.3f} s")


if __name__ == "__main__":
    main()
