"""talkcodec.metrics: known values on synthetic images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from talkcodec.metrics import (
    MS_SSIM_WEIGHTS,
    keypoint_distance,
    ms_ssim,
    psnr,
    ssim,
    ssim_and_ms_ssim,
)


def textured_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8: smooth gradients plus mild noise, away from 0 and 255."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    base = 60 + 40 * np.sin(x / 9) + 30 * np.cos(y / 13)
    noise = np.random.default_rng(seed).normal(0, 8, (size, size, 3))
    return np.clip(base[..., None] + noise + [0, 20, 40], 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_identical_images_score_perfectly() -> None:
    image = textured_image()
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("offset", [1, 5, 16])
def test_uniform_offset_gives_the_analytic_psnr(offset: int) -> None:
    image = textured_image()
    shifted = image + np.uint8(offset)  # no pixel above 239: no wrap-around
    assert image.max() <= 255 - offset
    assert psnr(image, shifted) == pytest.approx(20 * math.log10(255 / offset), abs=1e-9)


def test_psnr_is_symmetric_and_rejects_mismatched_shapes() -> None:
    a, b = textured_image(seed=0), textured_image(seed=3)
    assert psnr(a, b) == psnr(b, a)
    message = r"images differ in shape: \(128, 128, 3\) vs \(64, 64, 3\)"
    with pytest.raises(ValueError, match=message):
        psnr(a, a[:64, :64])


def test_ms_ssim_and_ssim_fall_as_noise_grows() -> None:
    image = textured_image()
    scores = [ssim_and_ms_ssim(image, noisy(image, sigma)) for sigma in (2, 8, 20, 50)]
    single, multi = zip(*scores, strict=True)
    assert list(single) == sorted(single, reverse=True) and len(set(single)) == 4
    assert list(multi) == sorted(multi, reverse=True) and len(set(multi)) == 4
    assert all(0 < value < 1 for value in single + multi)


def test_ms_ssim_pieces_match_the_single_metrics() -> None:
    image = textured_image()
    other = noisy(image, 10)
    assert ssim_and_ms_ssim(image, other) == (ssim(image, other), ms_ssim(image, other))
    assert sum(MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=1e-3)


def test_ms_ssim_forgives_blur_more_than_ssim() -> None:
    """MS-SSIM weighs coarse scales most, so losing fine detail costs it less than SSIM."""
    import cv2

    image = textured_image()
    blurred = cv2.GaussianBlur(image, (0, 0), 1.5)
    assert ms_ssim(image, blurred) > ssim(image, blurred)


def test_ms_ssim_rejects_images_too_small_for_five_scales() -> None:
    small = textured_image(32)
    with pytest.raises(ValueError, match="ms_ssim needs images of at least 64x64, got 32x32"):
        ms_ssim(small, small)


def test_keypoint_distance_is_the_mean_euclidean_distance_in_xy() -> None:
    reference = np.array([[0.0, 0.0, 5.0], [10.0, 10.0, 0.0]])
    decoded = np.array([[3.0, 4.0, -9.0], [10.0, 10.0, 7.0]])  # z is ignored
    assert keypoint_distance(reference, decoded) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="landmark sets differ in shape"):
        keypoint_distance(reference, decoded[:1])


# -- HaarPSI ------------------------------------------------------------------------------------


def _portrait() -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)


def test_haarpsi_is_one_for_identical_images_colour_and_grey() -> None:
    from talkcodec.metrics import haarpsi

    image = _portrait()
    assert haarpsi(image, image) == pytest.approx(1.0, abs=1e-12)
    grey = image.mean(axis=2).astype(np.uint8)
    assert haarpsi(grey, grey) == pytest.approx(1.0, abs=1e-12)


def test_haarpsi_falls_strictly_with_noise_and_jpeg_and_is_symmetric() -> None:
    import cv2

    from talkcodec.metrics import haarpsi

    image = _portrait()
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, image.shape)
    noisy = [
        np.clip(image + sigma * noise, 0, 255).astype(np.uint8) for sigma in (2, 5, 10, 20, 40)
    ]
    scores = [haarpsi(image, other) for other in noisy]
    assert all(0 < s < 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    jpeg = []
    for quality in (90, 70, 50, 30, 10):
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        jpeg.append(haarpsi(image, cv2.imdecode(data, cv2.IMREAD_UNCHANGED)))
    assert jpeg == sorted(jpeg, reverse=True) and len(set(jpeg)) == len(jpeg)
    assert haarpsi(noisy[2], image) == pytest.approx(haarpsi(image, noisy[2]), abs=1e-12)
    with pytest.raises(ValueError, match="images differ in shape"):
        haarpsi(image, image[:64])


@pytest.mark.parametrize("size", [2, 4, 8])
def test_haarpsi_convolutions_are_scipys_same_mode(size: int) -> None:
    from scipy.signal import convolve2d

    from talkcodec.metrics import _convolve_same

    rng = np.random.default_rng(size)
    channel, kernel = rng.normal(size=(40, 33)), rng.normal(size=(size, size))
    expected = convolve2d(channel, kernel, mode="same")
    assert np.allclose(_convolve_same(channel, kernel), expected, atol=1e-10)
