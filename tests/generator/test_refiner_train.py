"""talkcodec.generator.train: the refiner's training loop on a tiny synthetic task (no clips)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, default_collate

from talkcodec.config import save_config
from talkcodec.generator.refiner import GUIDE_CHANNELS, Refiner, RefinerConfig, sample
from talkcodec.generator.train import (
    RunData,
    StepBatches,
    TrainConfig,
    Trainer,
    _resolve_config,
    export,
    ms_ssim_scales,
    validate,
)
from talkcodec.generator.weights import load_refiner
from talkcodec.training.run import CHECKPOINT_NAME, CONFIG_NAME

SIZE = 32
TINY = {"feature_channels": 8, "hidden_channels": 8, "residual_blocks": 1, "decoder_channels": 8}


def identity_grid(size: int = SIZE) -> torch.Tensor:
    """(size, size, 2) normalised grid that samples every pixel where it is."""
    axis = torch.linspace(-1, 1, size)
    rows, columns = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([columns, rows], dim=-1)


class ShiftedPairs(Dataset[dict[str, torch.Tensor]]):
    """Smooth random references; the warp is the identity but the target is the reference
    brightened and shifted by a pixel: what a refiner learns to add. Item i is a function of i."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        coarse = torch.rand(1, 3, SIZE // 4, SIZE // 4, generator=generator)
        reference = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")[0]
        target = (torch.roll(reference, 1, dims=-1) * 0.8 + 0.15).clamp(0, 1)
        return {
            "reference": reference * 0.8,
            "target": target,
            "grid": identity_grid(),
            "guide": torch.zeros(GUIDE_CHANNELS, SIZE, SIZE),
        }


def tiny_config(**overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "size_px": SIZE,
        "crop_px": 0,
        "batch_size": 4,
        "drivers_per_reference": 1,
        "warmup_steps": 2,
        "total_steps": 10,
        "learning_rate": 3e-3,
        **TINY,
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def run_steps(trainer: Trainer, pairs: Dataset[dict[str, torch.Tensor]], steps: int) -> list[float]:
    batches = iter(StepBatches(trainer.step, trainer.config.batch_size))
    losses = []
    for _ in range(steps):
        batch = default_collate([pairs[index] for index in next(batches)])
        losses.append(trainer.train_step(batch)["loss"])
    return losses


def test_untrained_refiner_returns_the_warp_exactly() -> None:
    torch.manual_seed(0)
    refiner = Refiner(RefinerConfig())
    reference = torch.rand(2, 3, 64, 64)
    grid = identity_grid(64)[None].repeat(2, 1, 1, 1) * 0.9 + 0.05 * torch.randn(2, 64, 64, 2)
    guide = torch.randn(2, GUIDE_CHANNELS, 64, 64)
    with torch.no_grad():
        assert torch.equal(refiner(reference, grid, guide), sample(reference, grid))
        # A window of the output (as training crops it) is the warp of that window.
        window = grid[:, 16:48, 8:40]
        refined = refiner(reference, window, guide[:, :, 16:48, 8:40])
    assert refined.shape == (2, 3, 32, 32)
    assert torch.equal(refined, sample(reference, window))


def test_a_few_steps_reduce_the_loss() -> None:
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(warmup_steps=30, total_steps=30))
    pairs = ShiftedPairs()
    fixed = default_collate([pairs[index] for index in range(4)])
    losses = [trainer.train_step(fixed)["loss"] for _ in range(10)]
    assert losses[-1] < 0.7 * losses[0]


def test_adversarial_phase_trains_the_discriminator() -> None:
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(warmup_steps=1))
    before = [p.detach().clone() for p in trainer.discriminator.parameters()]
    run_steps(trainer, ShiftedPairs(), 1)
    assert all(
        torch.equal(a, b) for a, b in zip(before, trainer.discriminator.parameters(), strict=True)
    )
    stats = trainer.train_step(default_collate([ShiftedPairs()[i] for i in range(4)]))
    assert {"g_adv", "g_fm", "d_loss"} <= set(stats)
    assert not all(
        torch.equal(a, b) for a, b in zip(before, trainer.discriminator.parameters(), strict=True)
    )


def test_resume_continues_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pairs = ShiftedPairs()
    config = tiny_config()  # warm-up ends at step 2: the checkpoint holds a trained discriminator
    trainer = Trainer(config)
    run_steps(trainer, pairs, 3)
    trainer.save(tmp_path / CHECKPOINT_NAME)
    run_steps(trainer, pairs, 2)

    resumed = Trainer(config)
    resumed.load(tmp_path / CHECKPOINT_NAME)
    assert resumed.step == 3
    run_steps(resumed, pairs, 2)
    assert resumed.step == trainer.step == 5
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in trainer.discriminator.state_dict().items():
        assert torch.equal(value, resumed.discriminator.state_dict()[name]), name


def test_export_loads_back_with_its_metadata(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pairs = ShiftedPairs()
    config = tiny_config()
    trainer = Trainer(config)
    run_steps(trainer, pairs, 2)
    val_batches = [default_collate([pairs[100 + i] for i in range(4)])]
    validation = validate(trainer.model, val_batches)
    data = RunData(pairs, val_batches, ["train-clip.mp4"], ["dev-clip.mp4"])
    path = tmp_path / "refiner.safetensors"
    export(trainer, path, config, data, validation, "python -m talkcodec.generator.train ...\n")

    loaded, metadata = load_refiner(path)
    assert metadata["steps"] == "2"
    assert json.loads(metadata["train_clips"]) == ["train-clip.mp4"]
    assert float(metadata["val_psnr_gain_db"]) == pytest.approx(validation["gain_db"], abs=1e-3)
    assert loaded.config == config.refiner_config()
    batch = val_batches[0]
    with torch.no_grad():
        expected = trainer.model(batch["reference"], batch["grid"], batch["guide"])
        assert torch.equal(loaded(batch["reference"], batch["grid"], batch["guide"]), expected)


def test_validation_of_an_untrained_refiner_gains_nothing() -> None:
    pairs = ShiftedPairs()
    batches = [default_collate([pairs[i] for i in range(4)])]
    validation = validate(Trainer(tiny_config()).model, batches)
    assert validation["gain_db"] == 0.0
    assert 5 < validation["psnr_warp_db"] < 40


def test_ms_ssim_scales_fit_the_crop() -> None:
    assert [ms_ssim_scales(side) for side in (256, 128, 96, 64, 32)] == [5, 5, 5, 4, 3]


def test_config_checks_and_resume_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of drivers_per_reference"):
        TrainConfig(batch_size=6, drivers_per_reference=4)
    with pytest.raises(ValueError, match="crop_px must be 0 or a multiple of 16"):
        TrainConfig(crop_px=100)
    save_config(tiny_config(), tmp_path / CONFIG_NAME)
    (tmp_path / CHECKPOINT_NAME).touch()
    names = [field for field in TrainConfig.__dataclass_fields__]
    args = argparse.Namespace(out=tmp_path, resume=True, export_only=False, **dict.fromkeys(names))
    args.total_steps = 99
    assert _resolve_config(args).total_steps == 99
    args.crop_px = 64
    with pytest.raises(SystemExit, match="cannot change crop_px when resuming"):
        _resolve_config(args)
    args.resume, args.crop_px = False, None
    with pytest.raises(SystemExit, match="holds a run already"):
        _resolve_config(args)


def test_step_batches_depend_only_on_the_step() -> None:
    batches = iter(StepBatches(3, 4))
    assert next(batches) == [12, 13, 14, 15]
    assert next(batches) == [16, 17, 18, 19]
    assert np.array_equal(next(iter(StepBatches(4, 4))), [16, 17, 18, 19])
