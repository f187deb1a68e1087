"""The full renderer: warp v2 (headwarp) refined by the GAN refiner on an inference backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkcodec.bank import DEFAULT_BANK_SIZE
from talkcodec.generator.backends.base import RefinerBackend
from talkcodec.generator.base import Renderer
from talkcodec.generator.guide import draw_guide, normalised_grid
from talkcodec.generator.headwarp import HeadMesh, build_head_mesh, head_flow
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.segmentation import PersonSegmenter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _GanReference:
    """One reference as the refiner needs it, prepared once."""

    mesh: HeadMesh
    reference: np.ndarray  # (1, 3, P, P) float32 in [0, 1], edge-padded to the network's side
    features: object  # the backend's cached reference features


def image_to_tensor(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def tensor_to_image(tensor: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return np.clip(tensor[0].transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def network_side(height: int, width: int) -> int:
    """The square side the refiner runs at for (height, width) frames: the larger side rounded
    up to a multiple of 4 (it halves twice), at least 8. Frames are edge-padded to it and the
    output cropped back, so any frame size renders."""
    return max(8, -(-max(height, width) // 4) * 4)


def pad_to(array: np.ndarray, side: int) -> np.ndarray:
    """(H, W, ...) -> (side, side, ...), edge-padded at the bottom and right."""
    padding = [(0, side - array.shape[0]), (0, side - array.shape[1])]
    return np.pad(array, padding + [(0, 0)] * (array.ndim - 2), mode="edge")


class GanRenderer(Renderer):
    """headwarp's dense warp, then the refiner (flow correction, occlusion gate, synthesis).

    backend: 'auto', 'torch', 'torch-bf16', 'onnxruntime' or 'tensorrt' (see
    talkcodec.generator.backends), or a backend already made (warmed up before a call);
    weights: the refiner's safetensors (default: the shipped ones). A backend named by name
    (and with it the weights) loads with the first reference.
    """

    name = "gan"
    uses_backend = True

    def __init__(
        self,
        bank_size: int = DEFAULT_BANK_SIZE,
        backend: str | RefinerBackend = "auto",
        weights: Path | None = None,
        threads: int | None = None,
        **_: Any,
    ) -> None:
        super().__init__(bank_size=bank_size)
        self._backend: Any = None
        if isinstance(backend, str):
            self._backend_name = backend
        else:
            self._backend_name, self._backend = backend.name, backend
        self._weights = weights
        self._threads = threads
        self._segmenter = PersonSegmenter()

    def backend_for(self, size_px: int) -> Any:
        """The inference backend for size_px x size_px frames, created on first use (and again
        if the stream's size changes: exported networks have fixed shapes)."""
        if self._backend is None or self._backend.size_px != size_px:
            from talkcodec.generator.backends import BackendUnavailable, make_backend

            try:
                self._backend = make_backend(
                    self._backend_name, self._weights, size_px=size_px, threads=self._threads
                )
            except ValueError as error:  # weights that are not refiner weights
                raise BackendUnavailable(f"the gan renderer cannot load: {error}") from None
            logger.info("gan renderer runs on %s", self._backend.describe())
        return self._backend

    def prepare_reference(self, image: np.ndarray, landmarks: Landmarks) -> _GanReference:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"reference must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        side = network_side(*image.shape[:2])
        mesh = build_head_mesh(image, landmarks, self._segmenter(image))
        reference = image_to_tensor(pad_to(image, side))
        features = self.backend_for(side).encode_reference(reference)
        return _GanReference(mesh, reference, features)

    def render_from(self, prepared: _GanReference, landmarks: Landmarks) -> np.ndarray:
        height, width = prepared.mesh.image.shape[:2]
        side = prepared.reference.shape[-1]
        source = head_flow(prepared.mesh, landmarks)  # (H, W, 2)
        guide = draw_guide(landmarks, source)  # (G, H, W)
        if side != height or side != width:
            source = pad_to(source, side)
            guide = pad_to(guide.transpose(1, 2, 0), side).transpose(2, 0, 1)
        refined = self.backend_for(side).refine(
            prepared.reference, prepared.features, normalised_grid(source), guide[None]
        )
        return tensor_to_image(np.asarray(refined))[:height, :width]

    def flow(self, landmarks: Landmarks) -> np.ndarray:
        """(H, W, 2) float32: the warp's sampling positions before the refiner corrects them."""
        _, prepared = self.reference_for(landmarks)
        return head_flow(prepared.mesh, landmarks)
