"""talkcodec.generator.gan: the full renderer (warp v2 + refiner) with its own random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from talkcodec.generator.gan import GanRenderer
from talkcodec.generator.guide import normalised_grid
from talkcodec.generator.headwarp import HeadWarpRenderer
from talkcodec.generator.refiner import Refiner
from talkcodec.generator.weights import save_refiner
from talkcodec.keypoints.landmarks import Landmarks
from tests.generator.test_headwarp import person_mask, reference, transformed


class _FixedSegmenter:
    def __call__(self, image: np.ndarray) -> np.ndarray:
        return person_mask()


def _weights(path: Path, perturb: bool) -> Path:
    torch.manual_seed(3)
    model = Refiner()
    if perturb:
        with torch.no_grad():
            for head in (model.frame_refiner.flow_head, model.frame_refiner.output_head):
                head.weight.normal_(0.0, 0.05)
    save_refiner(model, path)
    return path


def _renderer(weights: Path, backend: str = "torch") -> GanRenderer:
    renderer = GanRenderer(backend=backend, weights=weights)
    renderer._segmenter = _FixedSegmenter()  # type: ignore[assignment]
    return renderer


def _moved(landmarks: Landmarks) -> Landmarks:
    return transformed(landmarks, np.eye(3), np.array([5.0, -3.0, 0.0]))


def test_an_untrained_refiner_renders_the_warp(tmp_path: Path) -> None:
    image, landmarks = reference()
    warp = HeadWarpRenderer(segmenter=_FixedSegmenter())  # type: ignore[arg-type]
    warp.set_reference(image, landmarks)
    gan = _renderer(_weights(tmp_path / "zero.safetensors", perturb=False))
    gan.set_reference(image, landmarks)
    current = _moved(landmarks)
    difference = np.abs(gan.render(current).astype(int) - warp.render(current).astype(int))
    # OpenCV samples with 5-bit fixed-point weights: on pure noise that is a few levels off.
    assert difference.max() <= 8
    assert difference.mean() < 0.5


def test_onnxruntime_renders_what_torch_renders(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "random.safetensors", perturb=True)
    image, landmarks = reference()
    frames = []
    for backend in ("torch", "onnxruntime"):
        renderer = _renderer(weights, backend)
        renderer.set_reference(image, landmarks)
        frames.append(renderer.render(_moved(landmarks)).astype(int))
    assert np.abs(frames[0] - frames[1]).max() <= 1


def test_reference_features_are_computed_once_per_reference(tmp_path: Path) -> None:
    renderer = _renderer(_weights(tmp_path / "random.safetensors", perturb=True))
    image, landmarks = reference()
    renderer.set_reference(image, landmarks)
    backend = renderer.backend_for(image.shape[0])
    calls = []
    original = backend.encode_reference
    backend.encode_reference = lambda tensor: calls.append(1) or original(tensor)  # type: ignore[method-assign]
    renderer.set_reference(image, landmarks, reference_id=1)
    for _ in range(3):
        renderer.render(_moved(landmarks))
    assert len(calls) == 1


def test_missing_weights_say_how_to_make_them(tmp_path: Path) -> None:
    renderer = _renderer(tmp_path / "missing.safetensors")
    image, landmarks = reference()
    with pytest.raises(FileNotFoundError, match="refiner weights not found: .*generator.train"):
        renderer.set_reference(image, landmarks)


def test_grid_normalisation_puts_corner_pixels_at_plus_minus_one() -> None:
    pixel_y, pixel_x = np.mgrid[0:8, 0:8].astype(np.float32)
    grid = normalised_grid(np.stack([pixel_x, pixel_y], axis=-1))
    assert grid.shape == (1, 8, 8, 2)
    np.testing.assert_allclose(grid[0, 0, 0], [-1, -1])
    np.testing.assert_allclose(grid[0, -1, -1], [1, 1])


def test_frames_of_any_size_render(tmp_path: Path) -> None:
    """The network halves twice: other sizes are edge-padded and cropped back; still a no-op
    for an untrained refiner."""
    image, landmarks = reference()
    image = np.ascontiguousarray(image[:250, :246])
    warp = HeadWarpRenderer(segmenter=_FixedSegmenter())  # type: ignore[arg-type]
    gan = _renderer(_weights(tmp_path / "zero.safetensors", perturb=False))
    mask = person_mask()[:250, :246]
    for renderer in (warp, gan):
        renderer._segmenter = lambda _image: mask  # type: ignore[assignment]
        renderer.set_reference(image, landmarks)
    current = _moved(landmarks)
    rendered = gan.render(current)
    assert rendered.shape == (250, 246, 3)
    assert np.abs(rendered.astype(int) - warp.render(current).astype(int)).mean() < 0.5
