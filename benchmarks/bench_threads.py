"""TensorFlow thread settings when two processes share the CPU (``make test`` runs two pytest workers).

Each process trains a MobileNetV2 detector (random weights, 128 px, batch 32) on random images in
memory and times its second epoch (the first traces the train step). The script runs that job
alone and as two concurrent processes, once with TensorFlow's default thread pools (one thread per
core for intra-op and inter-op work) and once with ``TF_NUM_INTRAOP_THREADS`` /
``TF_NUM_INTEROP_THREADS`` set to the given values, and reports each epoch's wall time.

Usage:  .venv/bin/python benchmarks/bench_threads.py [--images 384] [--threads 1] [--out F]
Not a test: numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

JOB = """
import os, sys, time
N = int(sys.argv[1])
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from keras import layers
base = keras.applications.MobileNetV2(input_shape=(128, 128, 3), include_top=False, weights=None)
inputs = keras.Input((128, 128, 3))
model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(base(inputs))))
model.compile("adam", "binary_crossentropy")
rng = np.random.default_rng(0)
x, y = rng.random((N, 128, 128, 3), dtype=np.float32), rng.integers(0, 2, N)
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
start = time.perf_counter()
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
print(time.perf_counter() - start)
"""


def run(concurrent: int, images: int, threads: int | None) -> list[float]:
    """Second-epoch seconds of ``concurrent`` processes started together."""
    env = dict(os.environ)
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.pop(name, None)
        if threads:
            env[name] = str(threads)
    jobs = [subprocess.Popen([sys.executable, "-c", JOB, str(images)], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(concurrent)]
    return [round(float(job.communicate()[0].strip().splitlines()[-1]), 1) for job in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results_threads.json")
    args = parser.parse_args()
    result = dict(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                  images=args.images, runs=[])
    for threads in (None, args.threads):
        for concurrent in (1, 2):
            seconds = run(concurrent, args.images, threads)
            row = dict(threads="default" if threads is None else threads, processes=concurrent, epoch_seconds=seconds,
                       images_per_s_total=round(concurrent * args.images / max(seconds), 1))
            result["runs"].append(row)
            print(row, flush=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
