"""Screen: does a detector trained on real photos against their TAEF2 reconstructions alone — no generator
image at all — find the sample's generators? And do reconstructions help a detector that sees generators?

Aligned fakes (Rajan et al., ICLR 2025): a real photo passed through a latent-diffusion autoencoder keeps its
content and gains only the decoder's traces. TAEF2 (``helpers.reconstruct``) is a tiny distillation of FLUX.2's
autoencoder, not Stable Diffusion's, so whether its traces carry to SD 1.5 / SD 2.1 is the question measured.
Cheap by design (``helpers.aligned.screen``): ``--crop`` px centre crops at each picture's own resolution,
frozen ImageNet MobileNetV2 six-block features, linear probes (``--positive``: the stay-positive probe), on
``--per-source`` training crops of each source and every test crop. Rows, each scored on every generator:

- ``aligned only``: real vs reconstruction;
- ``every source`` / ``every source + aligned``: real vs the four generators, without and with reconstructions;
- ``held out sd15`` / ``held out sd21`` (``+ aligned``): leave one diffusion generator out.

    .venv/bin/python benchmarks/aligned_screen.py --run sample --per-source 150 [--positive]

Writes ``aligned_screen[_positive].csv`` and ``timings[_positive].json`` under ``--out`` (default
``runs/experiments/aligned_screen``, where the reconstructions are cached); copy the table into
``benchmarks/results_aligned_screen*.csv`` to keep it with the scripts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from run_options import add_run_arguments

from helpers import aligned, atomic, config, splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, size=False)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--per-source", type=int, default=150, help="training crops per source (val: a third)")
    parser.add_argument("--test-per-source", type=int, default=0, help="test crops per source (0: all)")
    parser.add_argument("--positive", action="store_true", help="stay-positive probes (non-negative weights)")
    parser.add_argument("--out", type=Path, default=config.REPO_ROOT / "runs" / "experiments" / "aligned_screen")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    split = splits.load_split(cfg.path("split.csv"))

    frames = {part: aligned.per_source(split[split["split"] == part], n, cfg.seed)
              for part, n in (("train", args.per_source), ("val", max(args.per_source // 3, 30)),
                              ("test", args.test_per_source))}
    started = time.perf_counter()
    table, parts = aligned.screen(frames, cfg.data_root, args.crop, args.out, cfg.seed, args.n_boot, args.positive,
                                  key=f"{args.run}_{args.per_source}_{args.test_per_source}_")
    suffix = "_positive" if args.positive else ""
    atomic.write_csv(args.out / f"aligned_screen{suffix}.csv", table)
    atomic.write_json(args.out / f"timings{suffix}.json", dict(
        seconds=round(time.perf_counter() - started, 1), crop=args.crop, per_source=args.per_source,
        crops={part: len(frame) for part, frame in parts["frames"].items()},
        reconstructed={part: len(r) for part, r in parts["rebuilt"].items()}), indent=2)
    print(table.pivot(index="probe", columns="generator", values="auc").to_string())


if __name__ == "__main__":
    main()
