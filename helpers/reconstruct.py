"""Aligned fakes: real photos passed through a latent-diffusion autoencoder (encode, decode, no denoising).

A reconstruction keeps the photo's content and gains the decoder's fingerprint, so a detector trained on
real versus reconstruction can only learn the decoder's traces (Rajan et al., "Aligned Datasets Improve
Detection of Latent Diffusion-Generated Images", ICLR 2025). The autoencoder is TAEF2, a tiny (1.3M + 1.3M
parameters) distillation of FLUX.2's VAE by Ollin Boer Bohan (``madebyollin/taesd``, MIT): this module
ports its upstream PyTorch definition (``taesd.py``: ``Encoder(32, use_midblock_gn=True)`` and
``Decoder(32, use_midblock_gn=True)``) to Keras and loads its weights from the ``.npz`` files of
``../shared/weights/taesd/`` (PyTorch layout, converted here). PyTorch is not needed.

:func:`reconstruct` maps uint8 RGB pictures to their reconstructions (same size, a multiple of 8 a
side); :func:`reconstruct_files` crops and re-encodes like each original and caches the results.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from helpers import config

LATENT_CHANNELS = 32
WIDTH = 64
FILES = ("taef2_encoder.npz", "taef2_decoder.npz")


def weights_folder() -> Path:
    """The first ``taesd/`` folder holding TAEF2's two files among the offline weight folders
    (:func:`helpers.config.weights_search_dirs`: ``$FAKEFACE_WEIGHTS``, the Keras cache, ``../shared/weights``)."""
    candidates = [folder / "taesd" for folder in config.weights_search_dirs()]
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES):
            return folder
    return candidates[-1]


def weights_available() -> bool:
    """Whether TAEF2's two weight files are in :func:`weights_folder` (no download exists for them)."""
    return all((weights_folder() / name).is_file() for name in FILES)


def _conv(filters: int, name: str, stride: int = 1, bias: bool = True, kernel: int = 3) -> list[keras.layers.Layer]:
    """PyTorch's ``Conv2d(k, padding=k // 2, stride)``: symmetric zero padding (Keras' "same" pads a
    stride-2 convolution on one side only), then a valid convolution."""
    layers = []
    if kernel > 1:
        layers.append(keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad"))
    layers.append(keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=bias, name=name))
    return layers


def _apply(layers: list[keras.layers.Layer], x):
    for layer in layers:
        x = layer(x)
    return x


def _block(x, name: str, midblock_gn: bool):
    """``Block(64, 64)``: optional global mixing (1x1 conv, GroupNorm(4), ReLU, 1x1 conv) added to the
    input, then three 3x3 convolutions with ReLUs between, added to the input, ReLU."""
    if midblock_gn:
        pooled = keras.layers.Conv2D(WIDTH * 4, 1, use_bias=False, name=f"{name}_pool0")(x)
        pooled = keras.layers.GroupNormalization(groups=4, epsilon=1e-5, name=f"{name}_pool1")(pooled)
        pooled = keras.layers.ReLU()(pooled)
        x = keras.layers.Add()([x, keras.layers.Conv2D(WIDTH, 1, use_bias=False, name=f"{name}_pool3")(pooled)])
    y = _apply(_conv(WIDTH, f"{name}_conv0"), x)
    y = _apply(_conv(WIDTH, f"{name}_conv2"), keras.layers.ReLU()(y))
    y = _apply(_conv(WIDTH, f"{name}_conv4"), keras.layers.ReLU()(y))
    return keras.layers.ReLU()(keras.layers.Add()([y, x]))


def build_encoder() -> keras.Model:
    """TAEF2's encoder: an RGB image in [0, 1] to a 32-channel latent at 1/8 of its size."""
    inputs = keras.Input((None, None, 3))
    x = _apply(_conv(WIDTH, "e0"), inputs)
    x = _block(x, "e1", False)
    index = 2
    for group in range(3):
        x = _apply(_conv(WIDTH, f"e{index}", stride=2, bias=False), x)
        for offset in (1, 2, 3):
            x = _block(x, f"e{index + offset}", midblock_gn=group == 2)
        index += 4
    outputs = _apply(_conv(LATENT_CHANNELS, "e14"), x)
    return keras.Model(inputs, outputs, name="taef2_encoder")


def build_decoder() -> keras.Model:
    """TAEF2's decoder: a latent back to RGB (unclamped; :func:`reconstruct` clips to [0, 1])."""
    inputs = keras.Input((None, None, LATENT_CHANNELS))
    x = keras.layers.Lambda(lambda z: keras.ops.tanh(z / 3) * 3, name="clamp")(inputs)
    x = keras.layers.ReLU()(_apply(_conv(WIDTH, "d1"), x))
    index = 3
    for group in range(3):
        for offset in (0, 1, 2):
            x = _block(x, f"d{index + offset}", midblock_gn=group == 0)
        x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
        x = _apply(_conv(WIDTH, f"d{index + 4}", bias=False), x)
        index += 5
    x = _block(x, "d18", False)
    outputs = _apply(_conv(3, "d19"), x)
    return keras.Model(inputs, outputs, name="taef2_decoder")


def _keras_name(torch_name: str, prefix: str) -> tuple[str, str]:
    """``"3.conv.2.weight"`` -> (``"d3_conv2"``, ``"weight"``); ``"11.pool.1.bias"`` -> (``"e11_pool1"``, ...)."""
    parts = torch_name.split(".")
    return prefix + "_".join([parts[0], *(f"{a}{b}" for a, b in zip(parts[1:-1:2], parts[2:-1:2]))]), parts[-1]


def load_weights(model: keras.Model, npz: str | os.PathLike, prefix: str) -> None:
    """Copy an upstream state dict (PyTorch layout, float16) into ``model``; every array must find its
    layer and every layer with weights must be filled, or ``ValueError``."""
    stored = np.load(npz)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key in stored.files:
        layer, kind = _keras_name(key, prefix)
        arrays.setdefault(layer, {})[kind] = stored[key].astype(np.float32)
    filled = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in arrays:
            raise ValueError(f"{npz}: no weights for layer {layer.name}")
        given = arrays[layer.name]
        if isinstance(layer, keras.layers.GroupNormalization):
            layer.set_weights([given["weight"], given["bias"]])
        else:
            kernel = given["weight"].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            layer.set_weights([kernel, given["bias"]] if "bias" in given else [kernel])
        filled.add(layer.name)
    unused = set(arrays) - filled
    if unused:
        raise ValueError(f"{npz}: arrays for no layer: {sorted(unused)[:5]}")


def load_taef2(folder: str | os.PathLike | None = None) -> tuple[keras.Model, keras.Model]:
    """The encoder and decoder with TAEF2's weights (from :func:`weights_folder` unless ``folder``)."""
    folder = Path(folder) if folder else weights_folder()
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"TAEF2 weights not found in {folder}: {missing} (see ../shared/weights/README.md)")
    encoder, decoder = build_encoder(), build_decoder()
    load_weights(encoder, folder / "taef2_encoder.npz", "e")
    load_weights(decoder, folder / "taef2_decoder.npz", "d")
    return encoder, decoder


def reconstruct(images: np.ndarray, encoder: keras.Model, decoder: keras.Model, batch_size: int = 8) -> np.ndarray:
    """Reconstructions of ``(n, h, w, 3)`` uint8 pictures (``h`` and ``w`` multiples of 8), as uint8."""
    if images.ndim != 4 or images.shape[1] % 8 or images.shape[2] % 8:
        raise ValueError(f"pictures must be (n, h, w, 3) with h and w multiples of 8, not {images.shape}")
    out = np.empty_like(images, dtype=np.uint8)
    chunk = 32 * batch_size  # a few hundred pictures a predict() call: its set-up is paid once a chunk
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float32) / 255.0
        latent = encoder.predict(part, batch_size=batch_size, verbose=0)
        decoded = decoder.predict(latent, batch_size=batch_size, verbose=0)
        out[start:start + chunk] = np.clip(np.rint(np.clip(decoded, 0, 1) * 255), 0, 255).astype(np.uint8)
    return out


# The luminance quantization table of the JPEG standard (ITU T.81 Annex K, table K.1), which libjpeg scales by
# its quality setting (jcparam.c: scale 5000/q below 50, 200 - 2q from 50).
_STANDARD_LUMINANCE = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
                                69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
                                81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def libjpeg_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg writes at ``quality`` (1-100), with baseline's 1-255 clamp."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_STANDARD_LUMINANCE * scale + 50) // 100, 1, 255)


def jpeg_quality(img) -> int | None:
    """The libjpeg quality whose luminance table is closest to an opened JPEG's (None for other formats), so
    a reconstruction can be re-encoded like its original."""
    tables = getattr(img, "quantization", None)
    if img.format != "JPEG" or not tables:
        return None
    total = int(np.sum(tables[min(tables)]))
    return min(range(1, 101), key=lambda q: (abs(int(libjpeg_table(q).sum()) - total), -q))


def psnr(original: np.ndarray, other: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 pictures (peak 255)."""
    error = np.mean((original.astype(np.float64) - other.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0 ** 2 / error))
