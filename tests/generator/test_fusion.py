"""The hybrid mode's fusion on synthetic inputs: exactly the low-res frame where the render
disagrees, exactly the render where it agrees."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkcodec.generator.fusion import (
    FusionConfig,
    agreement_mask,
    fuse,
    fusion_level_for,
    low_band,
    upscale,
    upscale_uint8,
)

SIZE = 128
LOW = 32


def _scene(seed: int = 0) -> np.ndarray:
    """A smooth (SIZE, SIZE, 3) uint8 picture with some texture on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * (200 / SIZE) + 20
    texture = cv2.GaussianBlur(rng.normal(0, 12, (SIZE, SIZE, 3)).astype(np.float32), (0, 0), 1)
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def _lowres(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (LOW, LOW), interpolation=cv2.INTER_AREA)


def test_a_zero_mask_gives_the_upscaled_lowres_frame_exactly() -> None:
    scene = _scene()
    lowres = _lowres(scene)
    fused = fuse(lowres, _scene(1), mask=np.zeros((SIZE, SIZE), np.float32))
    assert np.array_equal(fused, upscale_uint8(lowres, (SIZE, SIZE)))


def test_a_render_that_agrees_is_taken_whole() -> None:
    scene = _scene()
    # The low-res frame of the very scene the render shows: low bands agree everywhere.
    fused = fuse(_lowres(scene), scene)
    assert np.array_equal(fused, scene)


def test_where_the_render_disagrees_the_lowres_frame_is_shown() -> None:
    scene = _scene()
    render = scene.copy()
    left = scene[:, : SIZE // 2].astype(np.int16)
    render[:, : SIZE // 2] = np.clip(left + 120, 0, 255)  # the left half is far too bright
    lowres = _lowres(scene)
    config = FusionConfig(agree_level=6, disagree_level=18)
    fused = fuse(lowres, render, config)
    expected_left = upscale_uint8(lowres, (SIZE, SIZE))[:, : SIZE // 2 - 16]
    assert np.array_equal(fused[:, : SIZE // 2 - 16], expected_left)
    assert np.array_equal(fused[:, SIZE // 2 + 16 :], scene[:, SIZE // 2 + 16 :])


def test_agreement_mask_falls_with_the_difference() -> None:
    low = low_band(_scene().astype(np.float32), (LOW, LOW))
    config = FusionConfig(agree_level=5, disagree_level=15, smoothing_px=0)
    masks = [agreement_mask(low + offset, low, config) for offset in (0, 5, 10, 15, 30)]
    assert [float(m.mean()) for m in masks] == pytest.approx([1, 1, 0.5, 0, 0], abs=1e-4)
    assert upscale(_lowres(_scene()), (SIZE, SIZE)).dtype == np.float32


def test_a_mask_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="fusion mask must be"):
        fuse(_lowres(_scene()), _scene(), mask=np.ones((4, 4)))


def test_fusion_config_rejects_levels_out_of_order() -> None:
    with pytest.raises(ValueError, match="agree_level < disagree_level"):
        FusionConfig(agree_level=10, disagree_level=10)
    assert FusionConfig.for_level(12) == FusionConfig(agree_level=12, disagree_level=36)


def test_coarser_lowres_pictures_get_a_larger_agree_level() -> None:
    levels = [fusion_level_for(kbps, (64, 64), 25.0) for kbps in (1, 4, 8, 12, 100)]
    assert levels == sorted(levels, reverse=True)
    assert levels[0] == 40 and levels[-1] == 4  # the bounds
    assert levels[1] == 18  # 0.7 / (4000 / (25 * 64 * 64)) = 17.9
