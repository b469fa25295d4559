"""Format-blind copies and scoring crops (helpers.format_blind): geometry worked by hand on non-square pictures,
the copy's draws, and the size/quality shortcut check against pictures whose label their size gives away."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import format_blind, perturb


def _picture(height: int, width: int) -> np.ndarray:
    """Pixel (y, x) holds (y mod 256, x mod 256, (y + x) mod 256): a crop's position can be read off its pixels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([y % 256, x % 256, (y + x) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(("height", "width"), [(300, 200), (200, 300), (128, 128)])
def test_scoring_crops_are_the_centre_and_the_corners(height, width):
    image = _picture(height, width)
    crops = format_blind.scoring_crops(image, side=128, count=5)
    top, left = (height - 128) // 2, (width - 128) // 2  # worked by hand: portrait, landscape, square
    expected = [image[top:top + 128, left:left + 128], image[:128, :128], image[:128, width - 128:],
                image[height - 128:, :128], image[height - 128:, width - 128:]]
    assert crops.shape == (5, 128, 128, 3)
    for crop, want in zip(crops, expected):
        np.testing.assert_array_equal(crop, want)


def test_a_picture_smaller_than_the_crop_is_enlarged_just_enough():
    image = _picture(100, 160)  # landscape, its shorter side (height) under the crop
    crops = format_blind.scoring_crops(image, side=128, count=1)
    assert crops.shape == (1, 128, 128, 3)
    enlarged = format_blind.rescaled(image, 1.0, 128)
    assert enlarged.shape[:2] == (128, round(160 * 1.28))  # the shorter side becomes exactly 128
    assert format_blind.rescaled(_picture(300, 200), 0.5, 128).shape[:2] == (192, 128)  # never below the crop


def test_a_copy_is_seeded_by_file_and_copy_and_is_always_the_crop_size():
    image = _picture(512, 384)
    first = format_blind.format_blind_copy(image, "fake/sd15/a.jpg", 0)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, format_blind.format_blind_copy(image, "fake/sd15/a.jpg", 0))
    assert not np.array_equal(first, format_blind.format_blind_copy(image, "fake/sd15/a.jpg", 1))
    assert not np.array_equal(first, format_blind.format_blind_copy(image, "fake/sd15/b.jpg", 0))


def test_a_copy_follows_its_plan():
    """Rebuild a copy from its plan with Pillow directly: rescale, crop, blur, JPEG, in that order."""
    settings = format_blind.FormatBlind(side=64, blur_p=0.5, keep_p=0.5)
    image = _picture(240, 180)
    seen_kept = seen_encoded = False
    for copy in range(12):
        plan = format_blind.plan_copy("real/x/1.jpg", copy, settings)
        assert settings.scale[0] <= plan.factor <= settings.scale[1]
        assert plan.quality is None or settings.quality[0] <= plan.quality <= settings.quality[1]
        factor = max(plan.factor, 64 / 180)
        resized = np.asarray(Image.fromarray(image).resize((max(64, round(180 * factor)), max(64, round(240 * factor))),
                                                           plan.interpolation))
        top = round(plan.top * (resized.shape[0] - 64))
        left = round(plan.left * (resized.shape[1] - 64))
        want = np.ascontiguousarray(resized[top:top + 64, left:left + 64])
        if plan.sigma:
            want = perturb.blur(want, plan.sigma)
        if plan.quality is not None:
            want = perturb.jpeg(want, plan.quality)
            seen_encoded = True
        else:
            seen_kept = True
        np.testing.assert_array_equal(format_blind.format_blind_copy(image, "real/x/1.jpg", copy, settings), want)
        assert format_blind.copy_quality("real/x/1.jpg", copy, settings, 77) == (plan.quality or 77)
    assert seen_kept and seen_encoded


def test_the_draws_cover_their_ranges_for_real_and_fake_alike():
    settings = format_blind.FormatBlind()
    plans = [format_blind.plan_copy(f"{label}/s/{k}.jpg", 0, settings) for label in ("real", "fake") for k in range(400)]
    kept = np.mean([p.quality is None for p in plans])
    blurred = np.mean([p.sigma > 0 for p in plans])
    assert abs(kept - settings.keep_p) < 0.05 and abs(blurred - settings.blur_p) < 0.04
    qualities = [p.quality for p in plans if p.quality is not None]
    assert min(qualities) == settings.quality[0] and max(qualities) == settings.quality[1]


def test_the_shortcut_check_sees_size_and_is_blind_without_it():
    rng = np.random.default_rng(0)
    n = 400
    label = np.where(rng.random(n) < 0.5, "fake", "real")
    telling = pd.DataFrame(dict(width=np.where(label == "fake", 768, 256), height=np.where(label == "fake", 768, 256),
                                quality=rng.integers(65, 101, n), label=label))
    assert format_blind.shortcut_auc(telling) > 0.99
    blind = telling.assign(width=128, height=128)
    assert abs(format_blind.shortcut_auc(blind) - 0.5) < 0.1
