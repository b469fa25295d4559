"""TAEF2 ported to Keras (helpers.reconstruct): the upstream autoencoder's reconstructions of sample faces
reach the PSNR that its PyTorch original gives (the weights README: ~30 dB for an FFHQ file, ~39 dB for a
FairFace file), every stored array is used, and pictures it cannot take are refused."""

from pathlib import Path

import numpy as np
import pytest

from helpers import reconstruct
from helpers.data import load_image


@pytest.fixture(scope="module")
def taef2():
    folder = reconstruct.weights_folder()
    if not all((folder / name).is_file() for name in reconstruct.FILES):
        pytest.fail(f"TAEF2 weights missing in {folder}") if __import__("os").environ.get("CI") else \
            pytest.skip(f"TAEF2 weights missing in {folder}")
    return reconstruct.load_taef2(folder)


@pytest.mark.parametrize("source, at_least, at_most", [("real/ffhq", 29.5, 31.5), ("real/fairface", 38.5, 40.5)])
def test_reconstructions_of_sample_faces_reach_the_upstream_psnr(taef2, shared_faces, source, at_least, at_most):
    path = sorted((shared_faces / source).iterdir())[0]
    image = load_image(path).image
    image = image[: image.shape[0] // 8 * 8, : image.shape[1] // 8 * 8]
    rebuilt = reconstruct.reconstruct(image[None], *taef2)[0]
    assert rebuilt.shape == image.shape and rebuilt.dtype == np.uint8
    assert at_least <= reconstruct.psnr(image, rebuilt) <= at_most
    assert not np.array_equal(rebuilt, image)  # the decoder leaves its trace


def test_psnr_matches_its_textbook_formula():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255² / 48: PSNR = 10 log10(48)
    assert reconstruct.psnr(a, b) == pytest.approx(10 * np.log10(48))
    assert reconstruct.psnr(a, a) == float("inf")


def test_every_stored_array_finds_its_layer_and_shapes_are_refused(taef2, tmp_path):
    encoder, decoder = taef2
    assert 1_300_000 < encoder.count_params() < 1_400_000 and 1_300_000 < decoder.count_params() < 1_400_000
    latent = encoder.predict(np.zeros((1, 32, 48, 3), np.float32), verbose=0)
    assert latent.shape == (1, 4, 6, reconstruct.LATENT_CHANNELS)
    stored = dict(np.load(reconstruct.weights_folder() / "taef2_encoder.npz"))
    stored["99.weight"] = stored["0.weight"]
    np.savez(tmp_path / "extra.npz", **stored)
    with pytest.raises(ValueError, match="arrays for no layer"):
        reconstruct.load_weights(reconstruct.build_encoder(), tmp_path / "extra.npz", "e")
    del stored["99.weight"], stored["14.bias"]
    np.savez(tmp_path / "short.npz", **stored)
    with pytest.raises((ValueError, KeyError)):
        reconstruct.load_weights(reconstruct.build_encoder(), tmp_path / "short.npz", "e")
    with pytest.raises(ValueError, match="multiples of 8"):
        reconstruct.reconstruct(np.zeros((1, 30, 32, 3), np.uint8), encoder, decoder)
    with pytest.raises(FileNotFoundError, match="TAEF2 weights not found"):
        reconstruct.load_taef2(tmp_path / "nowhere")
    assert Path(reconstruct.weights_folder()).name == "taesd"


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_the_jpeg_quality_of_a_file_is_read_back_from_its_tables(tmp_path, quality):
    from PIL import Image

    path = tmp_path / "q.jpg"
    Image.fromarray(np.random.default_rng(quality).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=quality)
    with Image.open(path) as img:
        assert reconstruct.jpeg_quality(img) == quality
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        assert reconstruct.jpeg_quality(img) is None
