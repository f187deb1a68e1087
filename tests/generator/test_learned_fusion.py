"""The learned fusion: its network's start (the agreement mask, softened), the ONNX Runtime
export agreeing with torch at any frame size, its weights files, and its training loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from talkcodec.config import DecoderConfig
from talkcodec.generator.fusion import FusionConfig, fusion_inputs
from talkcodec.generator.fusion_net import (
    DEFAULT_FUSION_WEIGHTS,
    MASK_GAIN,
    FusionModel,
    FusionNet,
    load_fusion,
    save_fusion,
)
from talkcodec.generator.learned_fusion import LearnedFusion, planes_of
from talkcodec.metrics import haarpsi
from talkcodec.training.losses import haarpsi as haarpsi_torch

LEVEL = 12


def _pictures(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(low-res (h, w, 3), render (H, W, 3)) uint8: a smooth scene, the render of it shifted
    and textured so that render and low-res frame agree in some places and not in others."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([xx * 200 / width, yy * 200 / height, (xx + yy) * 100 / width], -1) + 20
    truth = np.clip(scene, 0, 255).astype(np.uint8)
    render = truth.astype(np.float32) + cv2.GaussianBlur(
        rng.normal(0, 20, truth.shape).astype(np.float32), (0, 0), 1.5
    )
    render[height // 3 : height // 2, width // 4 : width // 2] = 240  # a region that disagrees
    low = cv2.resize(truth, (max(8, width // 5), max(8, height // 5)), interpolation=cv2.INTER_AREA)
    return low, np.clip(render, 0, 255).astype(np.uint8)


def _random_weights(path: Path, seed: int) -> FusionNet:
    torch.manual_seed(seed)
    net = FusionNet()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    save_fusion(net, path, {"note": "test"})
    return net.eval()


def test_an_untrained_network_is_the_agreement_mask_softened(tmp_path: Path) -> None:
    low, render = _pictures(64, 64)
    weights = tmp_path / "fusion.safetensors"
    save_fusion(FusionNet(), weights)
    fused = LearnedFusion(weights, threads=1, cache_dir=tmp_path).fuse(low, render, LEVEL)
    lowres_up, render_float, _, mask = fusion_inputs(low, render, FusionConfig.for_level(LEVEL))
    weight = 1 / (1 + np.exp(-MASK_GAIN * (2 * mask - 1)))
    expected = np.clip(lowres_up + weight[..., None] * (render_float - lowres_up), 0, 255)
    assert fused.shape == render.shape and fused.dtype == np.uint8
    assert np.abs(fused.astype(np.float32) - expected).max() <= 1.01


@pytest.mark.parametrize("size", [(64, 64), (60, 76)])
def test_onnx_runtime_agrees_with_torch_at_any_size(tmp_path: Path, size: tuple) -> None:
    """(60, 76) is not a multiple of 8: the planes are edge-padded and the frame cropped back."""
    weights = tmp_path / "fusion.safetensors"
    net = _random_weights(weights, seed=1)
    low, render = _pictures(*size, seed=2)
    fused = LearnedFusion(weights, threads=1, cache_dir=tmp_path).fuse(low, render, LEVEL)
    planes = planes_of(low, render, LEVEL)
    padded = np.pad(planes, ((0, 0), (0, -size[0] % 8), (0, -size[1] % 8)), mode="edge")
    with torch.no_grad():
        frame = FusionModel(net)(torch.from_numpy(padded)[None])[0].numpy()
    expected = np.clip(frame[:, : size[0], : size[1]].transpose(1, 2, 0) * 255 + 0.5, 0, 255)
    assert fused.shape == (*size, 3)
    assert np.abs(fused.astype(np.int16) - expected.astype(np.uint8)).max() <= 1
    # The export is cached: a second fusion reuses it.
    assert len(list((tmp_path / "onnx").glob("fusion-*.onnx"))) == 1
    LearnedFusion(weights, threads=1, cache_dir=tmp_path).fuse(low, render, LEVEL)
    assert len(list((tmp_path / "onnx").glob("fusion-*.onnx"))) == 1


def test_weights_round_trip_and_bad_files(tmp_path: Path) -> None:
    weights = tmp_path / "fusion.safetensors"
    net = _random_weights(weights, seed=3)
    loaded, metadata = load_fusion(weights)
    assert metadata["note"] == "test" and metadata["format"] == "talkcodec-fusion"
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    with pytest.raises(FileNotFoundError, match="train_fusion"):
        load_fusion(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_fusion(junk)


def test_the_shipped_weights_load() -> None:
    net, metadata = load_fusion(DEFAULT_FUSION_WEIGHTS)
    assert isinstance(net, FusionNet)
    assert float(metadata["held_haarpsi"]) > float(metadata["held_plain_haarpsi"])


def test_the_decoder_config_names_its_fusion() -> None:
    assert DecoderConfig().fusion == "learned"
    with pytest.raises(ValueError, match="unknown fusion"):
        DecoderConfig(fusion="median")


def test_torch_haarpsi_is_the_metric() -> None:
    rng = np.random.default_rng(4)
    reference = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3)).astype(np.uint8), (0, 0), 2)
    noisy = np.clip(reference + rng.normal(0, 15, reference.shape), 0, 255).astype(np.uint8)

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255

    assert haarpsi_torch(tensor(reference), tensor(noisy)).item() == pytest.approx(
        haarpsi(reference, noisy), abs=1e-4
    )
    assert haarpsi_torch(tensor(reference), tensor(reference)).item() == pytest.approx(1, abs=1e-4)


def test_fusion_model_selection_guards_haarpsi_and_psnr_of_every_person() -> None:
    from talkcodec.generator.train_fusion import qualifies

    entry = {"held_worst_drop": 0.01, "held_worst_psnr_drop": 0.2}
    assert qualifies(entry)
    assert not qualifies(entry | {"held_worst_drop": 0.03})
    assert not qualifies(entry | {"held_worst_psnr_drop": 0.5})


def test_fine_tuning_scores_its_starting_weights_first_and_keeps_the_best(
    tmp_path: Path,
) -> None:
    import argparse
    import json

    from talkcodec.generator.train_fusion import CROP_PX, ClipExamples, train

    side = CROP_PX  # the trainer's crops
    clips = []
    for index in range(3):
        low, render = _pictures(side, side, seed=index)
        planes = planes_of(low, render, LEVEL)[None].astype(np.float16)
        clips.append(ClipExamples(f"clip{index}", planes, render[None], (0.0, 0.0)))  # a low bar
    start = tmp_path / "start.safetensors"
    _random_weights(start, seed=3)
    out = tmp_path / "run"
    out.mkdir()
    args = argparse.Namespace(
        widths=list(FusionNet().config.channels), lr=1e-4, steps=2, eval_every=1, batch=2,
        l1_weight=2.0, mse_weight=20.0, init_from=start, out=out,
    )  # fmt: skip
    best = train(args, clips[:2], clips[2:], {"clip2": "person"})
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [0, 1, 2]
    assert log[0]["init_from"] == str(start)
    assert best is not None
    assert best["held_haarpsi"] == max(entry["held_haarpsi"] for entry in log)
