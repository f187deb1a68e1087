"""Image quality metrics on uint8 RGB frames, and the keypoint distance between two frames."""

from __future__ import annotations

import cv2
import numpy as np

_LUMA_BT601 = np.array([0.299, 0.587, 0.114])
_SSIM_C1, _SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
# Wang, Simoncelli & Bovik, "Multi-scale structural similarity for image quality assessment"
# (Asilomar 2003), Table 1: the weight of each of the five scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all channels; inf for identical images."""
    if reference.shape != decoded.shape:
        raise ValueError(f"images differ in shape: {reference.shape} vs {decoded.shape}")
    if reference.dtype == decoded.dtype == np.uint8:
        mse = cv2.norm(reference, decoded, cv2.NORM_L2SQR) / reference.size  # exact, and fast
    else:
        mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _luma(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 BT.601 luma of an (H, W, 3) RGB image, range 0..255.

    float32 is exact enough here: the variance terms lose at most ~0.01 to cancellation,
    against SSIM's stabilising constant C2 = 58.5.
    """
    return (image.astype(np.float32) @ _LUMA_BT601.astype(np.float32)).astype(np.float32)


def _ssim_maps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(luminance term, contrast-structure term) maps of two (H, W) images."""

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + _SSIM_C1) / (mu_x**2 + mu_y**2 + _SSIM_C1)
    contrast_structure = (2 * cov + _SSIM_C2) / (var_x + var_y + _SSIM_C2)
    return luminance, contrast_structure


def ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) on luma (BT.601)."""
    luminance, contrast_structure = _ssim_maps(_luma(reference), _luma(decoded))
    return float((luminance * contrast_structure).mean(dtype=np.float64))


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM (Wang et al. 2003) on luma: five scales with the paper's weights.

    Each coarser scale is a 2x2 average of the previous one; the contrast-structure term is
    taken at every scale and the luminance term at the coarsest only, as in the paper. The
    window is the same as `ssim`'s, with mirrored borders, so images down to 16x16 at the
    coarsest scale (64x64 at the finest) are fine. Negative per-scale means are clipped to 0,
    so the result stays in [0, 1].
    """
    return ssim_and_ms_ssim(reference, decoded)[1]


def ssim_and_ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(ssim, ms_ssim) at once: SSIM is MS-SSIM's finest scale, so it comes nearly free."""
    x, y = _luma(reference), _luma(decoded)
    scales = len(MS_SSIM_WEIGHTS)
    if min(x.shape) < 2 ** (scales - 1) * 4:
        raise ValueError(f"ms_ssim needs images of at least 64x64, got {x.shape[1]}x{x.shape[0]}")
    single_scale, multi_scale = 0.0, 1.0
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        luminance, contrast_structure = _ssim_maps(x, y)
        if scale == 0:
            single_scale = float((luminance * contrast_structure).mean(dtype=np.float64))
        if scale == scales - 1:
            value = float((luminance * contrast_structure).mean(dtype=np.float64))
        else:
            value = float(contrast_structure.mean(dtype=np.float64))
            x, y = _downsample(x), _downsample(y)
        multi_scale *= max(value, 0.0) ** weight
    return single_scale, multi_scale


def _downsample(image: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd last row or column is dropped."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    image = image[:height, :width]
    return (image[0::2, 0::2] + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2]) / 4


def keypoint_distance(reference_points: np.ndarray, decoded_points: np.ndarray) -> float:
    """Mean Euclidean distance in pixels between matching (N, 2+) landmarks (x, y used)."""
    if reference_points.shape != decoded_points.shape:
        raise ValueError(
            f"landmark sets differ in shape: {reference_points.shape} vs {decoded_points.shape}"
        )
    offsets = reference_points[:, :2].astype(np.float64) - decoded_points[:, :2]
    return float(np.linalg.norm(offsets, axis=1).mean())


# HaarPSI (Reisenhofer, Bosse, Kutyniok & Wiegand, "A Haar wavelet-based perceptual similarity
# index for image quality assessment", Signal Processing: Image Communication 61, 2018): the
# constants the authors fitted, and the YIQ transform of the colour version.
HAARPSI_C = 30.0
HAARPSI_ALPHA = 4.2
HAARPSI_SCALES = 3
# RGB to YIQ, the colour space HaarPSI works in (also the training loss's, training/losses.py).
YIQ_FROM_RGB = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)


def haarpsi(reference: np.ndarray, decoded: np.ndarray) -> float:
    """HaarPSI of two (H, W, 3) uint8 RGB frames (or (H, W) grey ones), in [0, 1], 1 for equal
    images: the paper's colour version with its 2x2 subsampling, as the authors' reference code
    computes it (values 0..255, zero-padded 'same' convolutions).

    Luma (Y of YIQ) goes through Haar filters at 3 scales, horizontal and vertical; per
    orientation the local similarity of the two finest scales' magnitudes, (2|a||b| + C) /
    (a^2 + b^2 + C), is weighted by the larger coarsest-scale magnitude of the two images; the
    chroma (I, Q, 2x2-averaged magnitudes) adds a third map weighted by the mean of the other
    two weights; the weighted mean of the logistic of the maps (alpha) is mapped back by the
    logit and squared.
    """
    if reference.shape != decoded.shape:
        raise ValueError(f"images differ in shape: {reference.shape} vs {decoded.shape}")
    colour = reference.ndim == 3
    ref = _haarpsi_channels(reference.astype(np.float64), colour)
    dec = _haarpsi_channels(decoded.astype(np.float64), colour)
    ref = [_haarpsi_subsample(channel) for channel in ref]
    dec = [_haarpsi_subsample(channel) for channel in dec]
    ref_haar, dec_haar = _haar_decompose(ref[0]), _haar_decompose(dec[0])
    similarities, weights = [], []
    for orientation in range(2):
        coarsest = HAARPSI_SCALES - 1 + orientation * HAARPSI_SCALES
        weights.append(np.maximum(np.abs(ref_haar[coarsest]), np.abs(dec_haar[coarsest])))
        fine = [orientation * HAARPSI_SCALES, 1 + orientation * HAARPSI_SCALES]
        a, b = np.abs(ref_haar[fine]), np.abs(dec_haar[fine])
        similarities.append(np.mean(_similarity(a, b), axis=0))
    if colour:
        box = np.ones((2, 2)) / 4
        chroma = [
            _similarity(np.abs(_convolve_same(r, box)), np.abs(_convolve_same(d, box)))
            for r, d in zip(ref[1:], dec[1:], strict=True)
        ]
        similarities.append((chroma[0] + chroma[1]) / 2)
        weights.append((weights[0] + weights[1]) / 2)
    local = np.stack(similarities)
    weight = np.stack(weights)
    total = weight.sum()
    if total == 0:  # two flat images: nothing to tell them apart by structure
        return 1.0 if np.array_equal(reference, decoded) else 0.0
    pooled = float(np.sum(_sigmoid(local) * weight) / total)
    return float(_logit(pooled) ** 2)


def _haarpsi_channels(image: np.ndarray, colour: bool) -> list[np.ndarray]:
    if not colour:
        return [image]
    yiq = image @ YIQ_FROM_RGB.T
    return [yiq[..., 0], yiq[..., 1], yiq[..., 2]]


def _convolve_same(channel: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """scipy.signal.convolve2d(channel, kernel, mode="same") (zero padding), with OpenCV: the
    kernel flipped, anchored at (k // 2, k // 2) for an even size k (checked in the tests)."""
    size = kernel.shape[0]
    return cv2.filter2D(
        channel,
        -1,
        np.ascontiguousarray(kernel[::-1, ::-1]),
        anchor=(size // 2, size // 2),
        borderType=cv2.BORDER_CONSTANT,
    )


def _haarpsi_subsample(channel: np.ndarray) -> np.ndarray:
    return _convolve_same(channel, np.ones((2, 2)) / 4)[::2, ::2]


def _haar_decompose(channel: np.ndarray) -> np.ndarray:
    """(2 * HAARPSI_SCALES, H, W): horizontal then vertical Haar responses, finest scale first."""
    out = np.zeros((2 * HAARPSI_SCALES, *channel.shape))
    for scale in range(1, HAARPSI_SCALES + 1):
        size = 2**scale
        haar = np.full((size, size), 2.0**-scale)
        haar[: size // 2] *= -1
        out[scale - 1] = _convolve_same(channel, haar)
        out[scale - 1 + HAARPSI_SCALES] = _convolve_same(channel, haar.T)
    return out


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (2 * a * b + HAARPSI_C) / (a**2 + b**2 + HAARPSI_C)


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-HAARPSI_ALPHA * value))


def _logit(value: float) -> float:
    return float(np.log(value / (1 - value)) / HAARPSI_ALPHA)
