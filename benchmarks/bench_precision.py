"""float32 against Keras' ``mixed_bfloat16`` policy, and XLA (``jit_compile=True``), for MobileNetV2 on the CPU.

Two leads for CPU training speed. Keras' default ``jit_compile="auto"`` turns XLA *off* on a machine without a GPU
(``Trainer._resolve_auto_jit_compile``), so what the notebooks run on a CPU is the first variant;
the others ask for bfloat16 or XLA explicitly. Each job runs in its own process with one variant:
it builds the served recipe's detector (:func:`helpers.models.build_mobilenetv2` with the ImageNet
weights, 128 px, the whole base trainable with BatchNormalization frozen, the float32 sigmoid head),
trains two epochs on random images in memory and times the second (the first traces the step), then
times ``predict`` on the same images and records the largest score difference from the first
variant's (same weights, same images). Variants alternate over ``--rounds``; the faster round of
each is kept. bfloat16 only pays on CPUs with native support (``avx512_bf16`` or ``amx_bf16`` in
``/proc/cpuinfo``); without it oneDNN emulates the type.

Usage:  .venv/bin/python benchmarks/bench_precision.py [--images 768] [--rounds 3] [--out F]
Not a test: numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

JOB = """
import json, os, sys, time
policy, jit, N, size = sys.argv[1], sys.argv[2] == "xla", int(sys.argv[3]), int(sys.argv[4])
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from helpers import models
keras.mixed_precision.set_global_policy(policy)
keras.utils.set_random_seed(0)
model, _ = models.build_mobilenetv2(image_size=size, augment=False)   # offline ImageNet weights ($FAKEFACE_WEIGHTS)
models.prepare_finetune(model, trainable_fraction=1.0)                # the served recipe: whole base, BN frozen
model.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy", jit_compile=True if jit else "auto")
rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (N, size, size, 3)).astype(np.float32), rng.integers(0, 2, N)
model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
start = time.perf_counter()
model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
train_s = time.perf_counter() - start
model.predict(x[:64], batch_size=32, verbose=0)
start = time.perf_counter()
scores = model.predict(x, batch_size=32, verbose=0).reshape(-1)
predict_s = time.perf_counter() - start
print(json.dumps(dict(train_s=train_s, predict_s=predict_s, scores=scores.tolist())))
"""


VARIANTS = (("float32", "auto"), ("mixed_bfloat16", "auto"), ("float32", "xla"))


def run(policy: str, jit: str, images: int, size: int) -> dict:
    """One job's timings and scores."""
    out = subprocess.run([sys.executable, "-c", JOB, policy, jit, str(images), str(size)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bfloat16 flags (empty when it has none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", text)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=768)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results_precision.json")
    args = parser.parse_args()
    best: dict[tuple[str, str], dict] = {}
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            job = run(*variant, args.images, args.size)
            print(variant, f"round {round_}: train {job['train_s']:.1f} s, predict {job['predict_s']:.1f} s", flush=True)
            if variant not in best or job["train_s"] < best[variant]["train_s"]:
                best[variant] = job
    import numpy as np

    reference = np.array(best[VARIANTS[0]]["scores"])
    rows = []
    for policy, jit in VARIANTS:
        job = best[(policy, jit)]
        rows.append(dict(policy=policy, jit_compile="True" if jit == "xla" else "auto (off on a CPU)",
                         train_epoch_s=round(job["train_s"], 1),
                         train_images_per_s=round(args.images / job["train_s"], 1),
                         predict_s=round(job["predict_s"], 2),
                         predict_images_per_s=round(args.images / job["predict_s"], 1),
                         max_score_difference_vs_float32=float(np.abs(np.array(job["scores"]) - reference).max())))
        print(rows[-1])
    result = dict(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                  cpu_bf16_flags=cpu_bf16_flags(), images=args.images, image_size=args.size, rounds=args.rounds,
                  rows=rows)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
