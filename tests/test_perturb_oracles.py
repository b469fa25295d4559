"""Perturbations against Pillow called directly and against the augmentation as its docstring states it.

The oracle for :func:`helpers.perturb.augment` is the documented recipe written out with Pillow and a
NumPy generator drawn in the documented order (mirror with probability 0.5, Gaussian blur with sigma
uniform in 0-2, JPEG at a quality in 30-95, a random square crop of 80-100% of the shorter side at a
uniformly drawn offset), so a changed probability, range or offset shows as different pixels.
"""

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from helpers import perturb


def _image(height: int = 40, width: int = 52, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1) % 256
    return np.clip(smooth + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def _pillow_jpeg(picture: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _augment_by_the_spec(image: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    picture, steps = Image.fromarray(image), {}
    if rng.random() < 0.5:
        picture, steps["mirror"] = ImageOps.mirror(picture), True
    if rng.random() < 0.5:
        steps["sigma"] = float(rng.uniform(0.0, 2.0))
        picture = picture.filter(ImageFilter.GaussianBlur(steps["sigma"])) if steps["sigma"] > 0 else picture
    if rng.random() < 0.5:
        steps["quality"] = int(rng.integers(30, 95, endpoint=True))
        picture = _pillow_jpeg(picture, steps["quality"])
    width, height = picture.size
    side = int(min(height, width) * rng.uniform(0.8, 1.0))
    top, left = int(rng.integers(0, height - side, endpoint=True)), int(rng.integers(0, width - side, endpoint=True))
    steps.update(side=side, top=top, left=left)
    return np.asarray(picture.crop((left, top, left + side, top + side))), steps


def test_the_jpeg_perturbation_is_pillow_at_that_quality():
    """Bug caught: a JPEG step that ignores its quality. Oracle: Pillow's own encoder at 50 and at 95."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    pillow = {quality: np.asarray(_pillow_jpeg(Image.fromarray(image), quality)) for quality in (50, 95)}
    assert np.array_equal(perturb.jpeg(image, 50), pillow[50])
    assert np.array_equal(perturb.apply(image, "jpeg:50"), pillow[50])
    assert not np.array_equal(perturb.jpeg(image, 50), perturb.jpeg(image, 95))


def test_augment_is_the_documented_recipe():
    image = _image()
    seen = {"mirror": 0, "sigma": [], "quality": [], "side": [], "top": [], "left": []}
    for seed in range(300):
        expected, steps = _augment_by_the_spec(image, seed)
        got = perturb.augment(image, seed)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        assert np.array_equal(got, expected), (seed, steps)
        seen["mirror"] += steps.get("mirror", False)
        for name in ("sigma", "quality"):
            if name in steps:
                seen[name].append(steps[name])
        for name in ("side", "top", "left"):
            seen[name].append(steps[name])
    # the draws cover what the docstring promises (300 copies: each step about half the time)
    assert 110 < seen["mirror"] < 190 and 110 < len(seen["sigma"]) < 190 and 110 < len(seen["quality"]) < 190
    assert min(seen["quality"]) <= 33 and max(seen["quality"]) >= 92 and set(seen["quality"]) <= set(range(30, 96))
    assert 32 <= min(seen["side"]) <= 33 and max(seen["side"]) == 39  # 80-100% of the 40-px side, int() floors
    assert min(seen["top"]) == 0 and min(seen["left"]) == 0 and max(seen["left"]) >= 18


def test_augment_through_apply_is_seeded_by_the_key_and_copy_number():
    image = _image()
    for key in ("real/ffhq/a.jpg", "fake/sd15/b.jpg"):
        for copy in (0, 1, 2):
            seed = perturb.stable_seed(f"{key}|{copy}")
            assert np.array_equal(perturb.apply(image, f"augment:{copy}", key), perturb.augment(image, seed))
            # in a chain, every step gets the key
            chained = perturb.apply(image, f"augment:{copy}+jpeg:95", key)
            assert np.array_equal(chained, perturb.jpeg(perturb.augment(image, seed), 95))
    # no key: the copy number alone seeds it (key "")
    assert np.array_equal(perturb.apply(image, "augment:1"), perturb.augment(image, perturb.stable_seed("|1")))
    assert perturb.stable_seed("x") == int.from_bytes(hashlib.sha1(b"x").digest()[:4], "little")


def test_a_scaled_copy_is_the_augment_copy_of_the_image_shrunk_first():
    """``scaled:K``: Pillow's bilinear resize by a factor drawn from 0.5-1 (seeded by the file and K), then the
    documented augment copy K of that smaller image (so its JPEG runs at the new scale)."""
    image = _image(80, 100)
    factors = []
    for key in ("real/ffhq/a.jpg", "fake/sd15/b.jpg", "real/utkface/c.jpg"):
        for copy in (0, 1, 2):
            factor = float(np.random.default_rng(perturb.stable_seed(f"scaled|{key}|{copy}")).uniform(0.5, 1.0))
            size = (round(100 * factor), round(80 * factor))
            shrunk = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            expected, _ = _augment_by_the_spec(shrunk, perturb.stable_seed(f"{key}|{copy}"))
            got = perturb.apply(image, f"scaled:{copy}", key)
            assert np.array_equal(got, expected), (key, copy)
            assert perturb.scaled_factor(key, copy) == factor
            factors.append(factor)
    assert min(factors) >= 0.5 and max(factors) <= 1.0 and len(set(factors)) == len(factors)
    # the same copy every time, another copy number or file another draw; labels play no part (the key is the path)
    assert np.array_equal(perturb.apply(image, "scaled:1", "x.jpg"), perturb.apply(image, "scaled:1", "x.jpg"))
    assert perturb.apply(image, "scaled:1", "x.jpg").shape != perturb.apply(image, "augment:1", "x.jpg").shape
    draws = [perturb.scaled_factor(f"f{i}.jpg", 0) for i in range(2000)]
    assert 0.5 <= min(draws) < 0.51 and 0.99 < max(draws) <= 1.0 and abs(np.mean(draws) - 0.75) < 0.01


def test_scale_blur_and_recode_are_pillow_with_the_documented_filters():
    image = _image()
    picture = Image.fromarray(image)
    assert np.array_equal(perturb.scale(image, 0.5), np.asarray(picture.resize((26, 20), Image.Resampling.BILINEAR)))
    assert np.array_equal(perturb.apply(image, "scale:1.5"),
                          np.asarray(picture.resize((78, 60), Image.Resampling.BILINEAR)))
    # never below 8 px on either side: 12 x 10 at half size is 8 x 8, not 6 x 5
    small = _image(10, 12)
    assert perturb.scale(small, 0.5).shape == (8, 8, 3)
    assert perturb.scale(_image(10, 40), 0.5).shape == (8, 20, 3)
    for sigma in (0.5, 1.0, 2.0):
        assert np.array_equal(perturb.apply(image, f"blur:{sigma}"),
                              np.asarray(picture.filter(ImageFilter.GaussianBlur(sigma))))
    assert not np.array_equal(perturb.blur(image, 0.5), image)
    assert perturb.blur(image, 0) is image  # sigma 0: the image itself, untouched
    square = picture.resize((32, 32), Image.Resampling.BILINEAR)
    assert np.array_equal(perturb.apply(image, "recode:32"), np.asarray(_pillow_jpeg(square, 90)))


def test_jpeg_of_a_grey_image_is_rgb_and_bad_names_say_what_is_allowed():
    grey = _image()[..., 0]
    out = perturb.jpeg(grey, 80)
    assert out.shape == grey.shape + (3,)
    with pytest.raises(ValueError, match="kind in"):
        perturb.parse("sharpen:2")
    with pytest.raises(ValueError, match="'jpeg'"):
        perturb.apply(_image(), "jpeg:90+jpeg")


@pytest.mark.parametrize("first, second, expected", [
    ("jpeg:90", "scale:0.5", "jpeg:90+scale:0.5"),
    ("scale:0.5", "jpeg:90", "scale:0.5+jpeg:90"),   # in the order given
    (None, "jpeg:90", "jpeg:90"), ("blur:1", "clean", "blur:1"), ("", "blur:1", "blur:1"),
    ("clean", None, "clean"), (None, "", "clean"), ("clean", "clean", "clean"),
])
def test_then_joins_the_steps_in_order_and_drops_the_empty_ones(first, second, expected):
    assert perturb.then(first, second) == expected
