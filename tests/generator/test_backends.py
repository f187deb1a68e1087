"""Refiner backends: ONNX Runtime against torch, the export cache, `auto`, TensorRT's absence,
`talkcodec export onnx`, and the safetensors round trip. One ONNX export for the whole module."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from talkcodec.cli import main
from talkcodec.generator import backends
from talkcodec.generator.backends import BackendUnavailable, make_backend
from talkcodec.generator.backends.onnx_export import (
    FRAME_REFINER_INPUTS,
    FRAME_REFINER_OUTPUTS,
    REFERENCE_ENCODER_INPUTS,
    REFERENCE_ENCODER_OUTPUTS,
)
from talkcodec.generator.backends.tensorrt_backend import tensorrt_unavailable_reason
from talkcodec.generator.refiner import GUIDE_CHANNELS, Refiner, sample
from talkcodec.generator.weights import load_refiner, save_refiner

SIZE = 64


def _random_refiner() -> Refiner:
    """A refiner whose zero-initialised heads are perturbed, so its output is not the warp."""
    torch.manual_seed(0)
    refiner = Refiner().eval()
    with torch.no_grad():
        for head in (refiner.frame_refiner.flow_head, refiner.frame_refiner.output_head):
            for parameter in head.parameters():
                parameter.normal_(0.0, 0.05)
    return refiner


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "refiner.safetensors"
    save_refiner(_random_refiner(), path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What cache_root() gives with XDG_CACHE_HOME set to its parent."""
    return tmp_path_factory.mktemp("cache") / "talkcodec"


@pytest.fixture(scope="module")
def onnxruntime_backend(weights: Path, cache_dir: Path) -> backends.RefinerBackend:
    return make_backend("onnxruntime", weights, SIZE, threads=1, cache_dir=cache_dir)


def _frame_inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """reference (1, 3, S, S), grid (1, S, S, 2) reaching past the border, guide (1, G, S, S)."""
    rng = np.random.default_rng(seed)
    reference = rng.random((1, 3, SIZE, SIZE), dtype=np.float32)
    grid = rng.uniform(-1.1, 1.1, (1, SIZE, SIZE, 2)).astype(np.float32)
    guide = rng.random((1, GUIDE_CHANNELS, SIZE, SIZE), dtype=np.float32)
    return reference, grid, guide


@pytest.mark.parametrize("seed", [1, 2])
def test_onnxruntime_matches_torch(
    onnxruntime_backend: backends.RefinerBackend, weights: Path, seed: int
) -> None:
    reference, grid, guide = _frame_inputs(seed)
    torch_backend = make_backend("torch", weights, SIZE)
    expected = torch_backend.refine(
        reference, torch_backend.encode_reference(reference), grid, guide
    )
    features = onnxruntime_backend.encode_reference(reference)
    frame = onnxruntime_backend.refine(reference, features, grid, guide)
    assert frame.shape == (1, 3, SIZE, SIZE) and frame.dtype == np.float32
    np.testing.assert_allclose(frame, expected, rtol=0, atol=1e-4)
    # The heads are live: the refiner moves the frame well away from the plain warp.
    warped = sample(torch.from_numpy(reference), torch.from_numpy(grid)).numpy()
    assert np.abs(expected - warped).max() > 0.05


def test_onnx_cache_is_reused(
    onnxruntime_backend: backends.RefinerBackend, weights: Path, cache_dir: Path
) -> None:
    models = onnxruntime_backend.models  # type: ignore[attr-defined]
    before = {
        path: path.stat().st_mtime_ns for path in (models.reference_encoder, models.frame_refiner)
    }
    again = make_backend("onnxruntime", weights, SIZE, threads=1, cache_dir=cache_dir)
    assert again.models == models  # type: ignore[attr-defined]
    assert {path: path.stat().st_mtime_ns for path in before} == before
    assert len(list((cache_dir / "onnx").iterdir())) == 1


def test_onnx_models_have_documented_names(onnxruntime_backend: backends.RefinerBackend) -> None:
    models = onnxruntime_backend.models  # type: ignore[attr-defined]
    for path, inputs, outputs in (
        (models.reference_encoder, REFERENCE_ENCODER_INPUTS, REFERENCE_ENCODER_OUTPUTS),
        (models.frame_refiner, FRAME_REFINER_INPUTS, FRAME_REFINER_OUTPUTS),
    ):
        graph = onnx.load(str(path)).graph
        assert tuple(value.name for value in graph.input) == inputs
        assert tuple(value.name for value in graph.output) == outputs


def test_refine_rejects_a_wrong_frame_size(onnxruntime_backend: backends.RefinerBackend) -> None:
    reference, grid, guide = _frame_inputs(3)
    features = onnxruntime_backend.encode_reference(reference)
    with pytest.raises(ValueError, match=r"grid must have shape \(1, 64, 64, 2\), got \(1, 32"):
        onnxruntime_backend.refine(reference, features, grid[:, :32], guide)


def test_auto_picks_onnxruntime_without_tensorrt(
    weights: Path, cache_dir: Path, onnxruntime_backend: backends.RefinerBackend, caplog
) -> None:
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a CUDA GPU are present here, so auto picks tensorrt")
    with caplog.at_level(logging.INFO, logger="talkcodec.generator.backends"):
        backend = make_backend("auto", weights, SIZE, threads=1, cache_dir=cache_dir)
    assert backend.name == "onnxruntime"
    assert "backend auto: onnxruntime (tensorrt unavailable: " in caplog.text


def test_tensorrt_unavailable_says_what_to_install(weights: Path, cache_dir: Path) -> None:
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a CUDA GPU are present here")
    with pytest.raises(BackendUnavailable) as raised:
        make_backend("tensorrt", weights, SIZE, cache_dir=cache_dir)
    message = str(raised.value)
    assert message.startswith("the tensorrt backend cannot run here: ")
    assert 'pip install "tensorrt>=10,<11"' in message
    assert "an NVIDIA GPU with CUDA" in message


def test_unknown_backend_names_the_valid_ones(weights: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'; choose one of auto, torch, "):
        make_backend("tpu", weights, SIZE)


def test_export_cli_writes_two_valid_onnx_files(
    weights: Path, cache_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir.parent))  # reuse the module's export
    out = tmp_path / "onnx"
    assert (
        main(["export", "onnx", "--weights", str(weights), "--size", str(SIZE), "-o", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    for name in ("reference_encoder.onnx", "frame_refiner.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
        assert str(out / name) in printed
    assert f"grid(1x{SIZE}x{SIZE}x2)" in printed


@pytest.mark.parametrize("content", [b"not a safetensors file", None])
def test_export_cli_rejects_bad_weights_in_one_line(
    tmp_path: Path, monkeypatch, capsys, content: bytes | None
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "refiner.safetensors"
    if content is not None:
        weights.write_bytes(content)
    code = main(["export", "onnx", "--weights", str(weights), "-o", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 1
    assert error.count("\n") == 1 and "Traceback" not in error
    expected = "is not a safetensors file" if content is not None else "refiner weights not found"
    assert error.startswith("talkcodec: error: ") and expected in error
    assert not (tmp_path / "out").exists()


def test_safetensors_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    refiner = _random_refiner()
    save_refiner(refiner, tmp_path / "refiner.safetensors")
    loaded, metadata = load_refiner(tmp_path / "refiner.safetensors")
    assert metadata["format"] == "talkcodec-refiner"
    reference, grid, guide = (torch.from_numpy(array) for array in _frame_inputs(4))
    with torch.no_grad():
        assert torch.equal(loaded(reference, grid, guide), refiner(reference, grid, guide))
