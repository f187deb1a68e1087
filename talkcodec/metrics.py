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
