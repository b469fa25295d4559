"""Peak memory and time of the validated loader and of ``fakeface predict`` on the costliest files.

Makes the files in a temporary folder (nothing is committed), then measures in fresh
processes, each already holding its imports before the measurement starts:
  1. ``load_image`` on each file alone (at the model size and at full resolution): the peak
     resident memory it adds (VmHWM after minus before), the memory the header predicted
     (``helpers.decoding.decode_cost``, what the guard and the budget use) and the seconds it took;
  2. ``fakeface predict`` over a folder of the four costliest formats (a 7000² WebP, a 6000²
     JPEG 2000, an 8000² progressive 4:4:4 JPEG, a 7000² RGBA PNG): the whole
     process's peak resident memory (TensorFlow and the model included), with an untrained
     64 px MobileNetV2 saved into a temporary runs folder.

Usage:  .venv/bin/python benchmarks/bench_decode_memory.py [--out benchmarks/results_decode_memory.json]
Not a test: the numbers depend on the machine and the library versions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_files(folder: Path) -> dict[str, Path]:
    """The worst cases of the reliability issue: a tiny-on-disk pixel bomb and the largest accepted decodes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "png_13000x13000_1bit_rejected": folder / "bomb.png",
        "png_8000x8000_16bit_gray": folder / "deep16.png",
        "png_7000x7000_rgb": folder / "rgb7000.png",
        "jpeg_8000x8000_rgb": folder / "big.jpg",
        "jpeg_8000x8000_cmyk": folder / "cmyk.jpg",
        "webp_7000x7000": folder / "big.webp",
        "jpeg2000_6000x6000": folder / "big.jp2",
        "jpeg_8000x8000_progressive_444": folder / "progressive444.jpg",
        "png_7000x7000_rgba": folder / "alpha.png",
        "jpeg_8000x8000_9010_scans": folder / "scans.jpg",
    }
    Image.new("1", (13000, 13000)).save(files["png_13000x13000_1bit_rejected"])
    gradient = np.linspace(0, 65535, 8000, dtype=np.uint16)
    Image.fromarray(np.tile(gradient, (8000, 1))).save(files["png_8000x8000_16bit_gray"])
    noise = np.random.default_rng(0).integers(0, 256, (100, 100, 3), np.uint8)
    rgb = Image.fromarray(noise).resize((7000, 7000), Image.Resampling.BICUBIC)  # smooth: compresses to ~50 MB
    rgb.save(files["png_7000x7000_rgb"])
    big = rgb.resize((8000, 8000))
    big.save(files["jpeg_8000x8000_rgb"], quality=90)
    big.convert("CMYK").save(files["jpeg_8000x8000_cmyk"], quality=90)
    big.save(files["jpeg_8000x8000_progressive_444"], progressive=True, subsampling=0, quality=90)
    rgb.save(files["webp_7000x7000"], quality=10, method=0)
    rgb.crop((0, 0, 6000, 6000)).save(files["jpeg2000_6000x6000"])
    rgba = rgb.copy()
    rgba.putalpha(200)
    rgba.save(files["png_7000x7000_rgba"], compress_level=1)
    sys.path.insert(0, str(REPO / "tests"))
    from test_decode_limits import many_scan_jpeg

    files["jpeg_8000x8000_9010_scans"].write_bytes(many_scan_jpeg(8000, 9000))
    return files


def loader_peak_mib(path: Path, size: int | None) -> dict:
    script = ("import json, time; from helpers import data, decoding\n"
              "costs = []; real = decoding.decode_cost\n"
              "decoding.decode_cost = lambda *a, **k: costs.append(real(*a, **k)) or costs[-1]\n"
              "before = decoding.peak_rss_mib(); started = time.perf_counter()\n"
              f"r = data.load_image({str(path)!r}, size={size!r})\n"
              "seconds = time.perf_counter() - started; after = decoding.peak_rss_mib()\n"
              "print(json.dumps(dict(added_mib=round(after - before, 1), total_mib=round(after, 1),"
              " predicted_mib=round(costs[-1] / 2**20, 1) if costs else None, seconds=round(seconds, 2),"
              " ok=r.ok, error=r.error, shape=None if r.image is None else list(r.image.shape))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def predict_peak_mib(folder: Path, runs: Path) -> dict:
    script = ("import sys, json\n"
              "from helpers import cli, decoding\n"
              f"code = cli.main(['predict', {str(folder)!r}, '--quiet', '--model', {str(_model_path(runs))!r}, "
              f"'--out', {str(runs / 'out.csv')!r}])\n"
              "print(json.dumps(dict(exit_code=code, peak_mib=round(decoding.peak_rss_mib(), 1))))")
    # (the untrained model scores at its own 64 px; a served detector that re-encodes is measured by the tests)
    env = dict(os.environ, FAKEFACE_RUNS=str(runs), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_files(tmp / "files")
        results = {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
                   "python": platform.python_version(), "pillow": Image.__version__, "loader": {}}
        for name, path in files.items():
            results["loader"][name] = {"file_mb": round(path.stat().st_size / 1e6, 2),
                                       "at_180px": loader_peak_mib(path, 180),
                                       "full_resolution": loader_peak_mib(path, None)}
            print(name, json.dumps(results["loader"][name]))
        folder = tmp / "predict"
        folder.mkdir()
        for name in ("webp_7000x7000", "jpeg2000_6000x6000", "jpeg_8000x8000_progressive_444", "png_7000x7000_rgba"):
            os.link(files[name], folder / files[name].name)
        runs = tmp / "runs"
        subprocess.run([sys.executable, "-c",
                        "import sys; from helpers import models; m, _ = models.build_mobilenetv2(image_size=64); "
                        "m.save(sys.argv[1])", str(_model_path(runs))], check=True, cwd=REPO,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        results["predict_four_largest"] = predict_peak_mib(folder, runs)
        print("predict", json.dumps(results["predict_four_largest"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def _model_path(runs: Path) -> Path:
    path = runs / "bench" / "models" / "mobilenetv2_finetune.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
