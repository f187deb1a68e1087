"""Fusion of the hybrid mode (after Gemino, NSDI 2024): a low-resolution video frame that
carries everything coarsely, and the keypoint-driven render that carries the detail.

The fused frame is the render where the render agrees with the low-res frame at low resolution
(the render is sharper there, and cleaner than a low-rate picture), and the upscaled low-res
frame exactly where they disagree (an occlusion the warp cannot know, a turn it lags behind,
hair, hands, the background changing), blended in between by a smooth agreement mask.

Agreement is judged on the render's low band, the render taken down to the low-res size (area)
and back up (bicubic) as the sender and receiver did to the camera frame, so that only what
the low-res frame can show is compared. How large a difference still counts as agreement
depends on how coarsely the low-res picture was coded: the sender says so in the stream header
(StreamHeader.fusion_level, from fusion_level_for below).

Measured on three train clips (100 frames, 64 px x264, WebP and GC keyframes): a mask that takes
the render where it agrees beats the one that keeps the low-res frame's low band and adds only
the render's detail (HaarPSI +0.03 to +0.17), and the best agreement level falls as the low-res
rate rises (16 at about 4 kbit/s, 10 at 8, 6 at 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Rec. 601 luma weights: agreement is judged on brightness, where a warp's errors show.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class FusionConfig:
    """The agreement mask: a pixel takes the render fully where the low bands of render and
    low-res frame differ by at most agree_level (luma, 0..255, smoothed over smoothing_px),
    the low-res frame from disagree_level on, linearly in between."""

    agree_level: float = 16.0
    disagree_level: float = 48.0
    smoothing_px: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.agree_level < self.disagree_level:
            raise ValueError(
                f"fusion levels need 0 <= agree_level < disagree_level, got "
                f"{self.agree_level} and {self.disagree_level}"
            )
        if self.smoothing_px < 0:
            raise ValueError(f"fusion smoothing_px must be >= 0, got {self.smoothing_px}")

    @classmethod
    def for_level(cls, level: int) -> FusionConfig:
        """The mask a stream header's fusion_level (the agree level, 1..255) asks for."""
        return cls(agree_level=float(level), disagree_level=3.0 * level)


# fusion_level_for: agree level = this / (bits per low-res pixel per frame), within the bounds
# (fitted on train clips: 16 at 0.039 bit/px, 10 at 0.078, 6 at 0.117).
_LEVEL_TIMES_BPP = 0.7
_MIN_LEVEL, _MAX_LEVEL = 4, 40


def fusion_level_for(kbps: float, size: tuple[int, int], fps: float) -> int:
    """The agree level a sender coding size (w, h) low-res pictures at kbps and fps puts in the
    stream header: the coarser the pictures, the larger the differences that still agree."""
    bits_per_pixel = kbps * 1000 / (fps * size[0] * size[1])
    return int(np.clip(round(_LEVEL_TIMES_BPP / bits_per_pixel), _MIN_LEVEL, _MAX_LEVEL))


def upscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 to (H, W, 3) float32 with size = (W, H), bicubic, as the receiver
    upscales a low-res frame."""
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)


def upscale_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """upscale, rounded back to uint8: what the receiver shows with no render to fuse."""
    return np.clip(np.rint(upscale(image, size)), 0, 255).astype(np.uint8)


def low_band(image: np.ndarray, low_size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32: `image` taken down to low_size (w, h) by area averaging and back up
    bicubic, the way the low-res frame was made from the camera frame."""
    height, width = image.shape[:2]
    small = cv2.resize(image, low_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(
        np.float32, copy=False
    )


def agreement_mask(
    render_low: np.ndarray, lowres_up: np.ndarray, config: FusionConfig
) -> np.ndarray:
    """(H, W) float32 in 0..1: how far to trust the render's detail at each pixel, from the
    difference of the two (H, W, 3) float32 low bands."""
    difference = np.abs((render_low - lowres_up) @ _LUMA)
    if config.smoothing_px > 0:
        difference = cv2.GaussianBlur(difference, (0, 0), config.smoothing_px)
    span = config.disagree_level - config.agree_level
    return np.clip((config.disagree_level - difference) / span, 0.0, 1.0)


def fusion_inputs(
    lowres: np.ndarray, render: np.ndarray, config: FusionConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lowres_up, render, render_low, mask): the (H, W, 3) float32 upscaled low-res frame,
    render and render low band, and the (H, W) agreement mask, from the decoded (h, w, 3)
    uint8 low-res frame and the (H, W, 3) uint8 render. What fuse and the learned fusion
    (talkcodec.generator.fusion_net) both start from."""
    height, width = render.shape[:2]
    low_size = (lowres.shape[1], lowres.shape[0])
    lowres_up = upscale(lowres, (width, height))
    render_float = render.astype(np.float32)
    render_low = low_band(render_float, low_size)
    return lowres_up, render_float, render_low, agreement_mask(render_low, lowres_up, config)


def fuse(
    lowres: np.ndarray,
    render: np.ndarray,
    config: FusionConfig | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The (H, W, 3) uint8 frame from the decoded (h, w, 3) uint8 low-res frame and the
    (H, W, 3) uint8 render of the same frame.

    mask: an (H, W) 0..1 agreement mask to use instead of agreement_mask's;
    where it is 0 the result is the upscaled low-res frame exactly, where 1 the render."""
    config = config or FusionConfig()
    height, width = render.shape[:2]
    if mask is None:
        lowres_up, render_float, _, mask = fusion_inputs(lowres, render, config)
    elif mask.shape != (height, width):
        raise ValueError(f"fusion mask must be {(height, width)}, got {mask.shape}")
    else:
        lowres_up, render_float = upscale(lowres, (width, height)), render.astype(np.float32)
    weight = mask[..., None]
    fused = lowres_up + weight * (render_float - lowres_up)
    return np.clip(np.rint(fused), 0, 255).astype(np.uint8)
