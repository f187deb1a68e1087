"""The learned fusion (talkcodec.generator.fusion_net) as the receiver runs it: ONNX Runtime on
the CPU, from an export made once per weights file and frame size and cached beside the
refiner's (~/.cache/talkcodec/onnx/fusion-<key>.onnx).

    input  "planes"  (1, 11, H8, W8)  float32: planes_of's planes, edge-padded to multiples of 8
    output "frame"   (1, 3, H8, W8)   float32 in [0, 1]

Nothing here imports torch unless an export has to be made.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

import talkcodec
from talkcodec.generator.fusion import FusionConfig, fusion_inputs

logger = logging.getLogger(__name__)

# The fusion level's plane is level / LEVEL_SCALE (levels are 4..40 from fusion_level_for).
LEVEL_SCALE = 40.0
INPUT_CHANNELS = 11
_MULTIPLE = 8  # the network halves the frame three times


def planes_of(lowres: np.ndarray, render: np.ndarray, level: int) -> np.ndarray:
    """(11, H, W) float32 network input of one frame, values in [0, 1]: the upscaled low-res
    frame, the render and its low band (RGB each), the agreement mask of `level`, and
    level / LEVEL_SCALE everywhere."""
    lowres_up, render_float, render_low, mask = fusion_inputs(
        lowres, render, FusionConfig.for_level(level)
    )
    planes = np.empty((INPUT_CHANNELS, *render.shape[:2]), np.float32)
    # Channel by channel (cv2.split), which is 4x faster here than a transposed concatenation.
    for index, image in enumerate((lowres_up, render_float, render_low)):
        for channel, values in enumerate(cv2.split(image)):
            planes[3 * index + channel] = values
    images = planes[:9]
    np.multiply(images, 1 / 255.0, out=images)
    np.clip(images, 0, 1, out=images)
    planes[9] = mask
    planes[10] = level / LEVEL_SCALE
    return planes


def padded_side(side: int) -> int:
    return -(-side // _MULTIPLE) * _MULTIPLE


def export_fusion_onnx(weights_path: Path | None, height: int, width: int, path: Path) -> None:
    """Export the fusion network (with its fusing step) at (height, width), both multiples of
    8, to `path`, checked with onnx.checker."""
    import onnx
    import torch

    from talkcodec.generator.backends.onnx_export import export_module
    from talkcodec.generator.fusion_net import FusionModel, load_fusion

    net, _ = load_fusion(weights_path)
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, INPUT_CHANNELS, height, width, generator=generator)
    export_module(FusionModel(net).eval(), (example,), path, ("planes",), ("frame",))
    onnx.checker.check_model(str(path), full_check=True)


def cached_fusion_onnx(
    weights_path: Path | None, height: int, width: int, cache_dir: Path | None = None
) -> Path:
    """The ONNX export of these fusion weights at (height, width), exported on first use.

    Raises FileNotFoundError or ValueError for missing or invalid weights."""
    from talkcodec.generator.backends.onnx_export import ONNX_OPSET, cache_root, file_sha256
    from talkcodec.generator.fusion_net import DEFAULT_FUSION_WEIGHTS, TRAIN_COMMAND

    weights_path = Path(weights_path or DEFAULT_FUSION_WEIGHTS)
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"fusion weights not found: {weights_path} (train them with `{TRAIN_COMMAND}`)"
        )
    folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / "onnx"
    key = (
        f"fusion-{file_sha256(weights_path)[:16]}-talkcodec{talkcodec.__version__}"
        f"-opset{ONNX_OPSET}-{width}x{height}"
    )
    path = folder / f"{key}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    # Export beside the final file and rename, so a concurrent reader never sees half a file.
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder))
    try:
        export_fusion_onnx(weights_path, height, width, staging / "fusion.onnx")
        (staging / "fusion.onnx").replace(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported the fusion network (%s) to %s", weights_path.name, path)
    return path


class LearnedFusion:
    """Fuses decoded low-res frames with renders through the fusion network on ONNX Runtime.

    weights: the fusion safetensors (default: the shipped ones); threads: ONNX Runtime's
    intra-op threads (None: every core); the session is made for the first frame's size.
    """

    def __init__(
        self,
        weights: Path | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._weights = weights
        self._threads = threads
        self._cache_dir = cache_dir
        self._session = None
        self._shape: tuple[int, int] | None = None

    def _session_for(self, height: int, width: int):  # noqa: ANN202 (onnxruntime's type)
        shape = (padded_side(height), padded_side(width))
        if self._session is None or self._shape != shape:
            from talkcodec.generator.backends.base import default_threads
            from talkcodec.generator.backends.onnxruntime_backend import cpu_session

            path = cached_fusion_onnx(self._weights, *shape, self._cache_dir)
            self._session = cpu_session(path, self._threads or default_threads())
            self._shape = shape
        return self._session

    def warm_up(self, height: int, width: int) -> None:
        """Make (or load) the export and the session for (height, width) frames now."""
        self._session_for(height, width)

    def fuse(self, lowres: np.ndarray, render: np.ndarray, level: int) -> np.ndarray:
        """The (H, W, 3) uint8 frame from the decoded (h, w, 3) uint8 low-res frame, the
        (H, W, 3) uint8 render and the stream's fusion level."""
        height, width = render.shape[:2]
        session = self._session_for(height, width)
        planes = planes_of(lowres, render, level)
        padded_height, padded_width = self._shape or (height, width)
        if (padded_height, padded_width) != (height, width):
            padding = ((0, 0), (0, padded_height - height), (0, padded_width - width))
            planes = np.pad(planes, padding, mode="edge")
        (frame,) = session.run(None, {"planes": planes[None]})
        image = frame[0, :, :height, :width].transpose(1, 2, 0)
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
