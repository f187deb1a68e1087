"""Train the GAN refiner on self-reenactment pairs of the training clips, resumable.

    OMP_NUM_THREADS=1 python -m talkcodec.generator.train --data ../shared/data/train \
        --warp headwarp --out runs/refiner --threads 1 --max-minutes 240 [--resume] \
        [--total-steps 20000] --export weights/refiner-v1.safetensors

Phase 1 (warm-up, `warmup_steps`): distortion only (L1 + MS-SSIM). Phase 2: the multi-scale
patch discriminator joins, with the hinge GAN loss and feature matching. The refiner starts as
the identity on the warp, so training begins from the warp's quality.

Step s always trains on the pairs s * batch_size .. (s + 1) * batch_size - 1 (see
ReenactmentPairs), so a resumed run sees exactly the batches an uninterrupted one would. The
run folder holds config.json, checkpoint.pt (state dicts, optimisers, step, RNG; read with
weights_only=True), commands.txt (every invocation) and log.jsonl (training means and the
validation PSNR of warp and refiner on fixed pairs of `val_data`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from talkcodec.generator.data import (
    PreparedClip,
    ReenactmentPairs,
    load_clips,
    person_weights,
)
from talkcodec.generator.refiner import Refiner, RefinerConfig, sample
from talkcodec.generator.weights import save_refiner
from talkcodec.keypoints.dataset import list_clips
from talkcodec.training.discriminator import MultiScaleDiscriminator
from talkcodec.training.losses import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    ms_ssim,
)
from talkcodec.training.run import (
    CHECKPOINT_NAME,
    WARMUP_CHECKPOINT_NAME,
    TimeLimit,
    add_config_flags,
    add_run_flags,
    append_log,
    load_checkpoint,
    means,
    resolve_config,
    save_checkpoint,
    start_run,
)

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved as config.json beside its checkpoints."""

    data: str = "../shared/data/train"
    val_data: str = "../shared/data/dev"
    warp: str = "headwarp"
    size_px: int = 256
    fps: float = 25.0
    reference_codec: str = "webp"  # what the receiver's reference went through ("none": raw)
    max_clips: int = 0  # 0: every clip of `data`
    balance_people: bool = True  # draw people (MANIFEST.tsv), not clips, uniformly
    # Output window the loss sees (0: whole frames). Whole frames at batch 4 gained +0.19 dB in
    # 3 CPU-minutes where 128 px windows at batch 8 gained +0.05 dB (3 clips, meshwarp).
    crop_px: int = 0
    batch_size: int = 4
    drivers_per_reference: int = 2
    augment: bool = True
    color_jitter: float = 0.05
    warmup_steps: int = 3000
    total_steps: int = 20000
    learning_rate: float = 2e-4
    discriminator_learning_rate: float = 2e-4
    l1_weight: float = 1.0
    ms_ssim_weight: float = 1.0
    feature_matching_weight: float = 0.2
    adversarial_weight: float = 0.02
    discriminator_scales: int = 2
    feature_channels: int = RefinerConfig.feature_channels
    hidden_channels: int = RefinerConfig.hidden_channels
    residual_blocks: int = RefinerConfig.residual_blocks
    decoder_channels: int = RefinerConfig.decoder_channels
    seed: int = 0
    workers: int = 0  # data loader processes (0: load in the training process)
    val_clips: int = 0  # 0: every clip of `val_data`
    val_pairs: int = 48
    val_every_steps: int = 250
    checkpoint_every_steps: int = 250
    log_every_steps: int = 50

    def __post_init__(self) -> None:
        if self.crop_px and (self.crop_px % 16 or not 32 <= self.crop_px <= self.size_px):
            raise ValueError(
                f"crop_px must be 0 or a multiple of 16 in 32..size_px, got {self.crop_px}"
            )
        if self.batch_size % self.drivers_per_reference:
            raise ValueError("batch_size must be a multiple of drivers_per_reference")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError("need 0 <= warmup_steps <= total_steps")

    def refiner_config(self) -> RefinerConfig:
        return RefinerConfig(
            feature_channels=self.feature_channels,
            hidden_channels=self.hidden_channels,
            residual_blocks=self.residual_blocks,
            decoder_channels=self.decoder_channels,
        )

    @property
    def output_px(self) -> int:
        return self.crop_px or self.size_px


def ms_ssim_scales(side_px: int) -> int:
    """How many MS-SSIM scales an image this small allows (5 at >= 96 px): the coarsest must
    keep more than the 11-tap window's 5-pixel reflection."""
    return max(1, min(5, int(math.log2(side_px / 6)) + 1))


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Gradients flow through `module` to its input but not into its parameters."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


class StepBatches(Sampler[list[int]]):
    """Endless batches of dataset indices: step s gets s * batch_size .. + batch_size - 1."""

    def __init__(self, start_step: int, batch_size: int) -> None:
        self.start_step = start_step
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield list(range(step * self.batch_size, (step + 1) * self.batch_size))
            step += 1


class Trainer:
    """Owns the refiner, the discriminator, their optimisers and the step counter of one run."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.model = Refiner(config.refiner_config())
        self.discriminator = MultiScaleDiscriminator(config.discriminator_scales)
        self.optimiser = torch.optim.Adam(
            self.model.parameters(), lr=config.learning_rate, betas=(0.5, 0.999)
        )
        self.d_optimiser = torch.optim.Adam(
            self.discriminator.parameters(),
            lr=config.discriminator_learning_rate,
            betas=(0.5, 0.999),
        )
        self.ms_ssim_scales = ms_ssim_scales(config.output_px)
        self.step = 0

    def state(self) -> dict[str, object]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "d_optimiser": self.d_optimiser.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict) -> None:  # type: ignore[type-arg]
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.d_optimiser.load_state_dict(state["d_optimiser"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, path: Path) -> None:
        save_checkpoint(self.state(), path)

    def load(self, path: Path) -> None:
        self.load_state(load_checkpoint(path, "refiner"))

    @property
    def adversarial(self) -> bool:
        return self.step >= self.config.warmup_steps

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step of the refiner (and, past warm-up, of the discriminator)."""
        config = self.config
        target = batch["target"]  # (B, 3, h, w)
        refined = self.model(batch["reference"], batch["grid"], batch["guide"])
        l1 = (refined - target).abs().mean()
        similarity = ms_ssim(refined, target, self.ms_ssim_scales).mean()
        loss = config.l1_weight * l1 + config.ms_ssim_weight * (1 - similarity)
        stats = {"l1": l1.item(), "ms_ssim": similarity.item()}
        adversarial = self.adversarial
        if adversarial:
            real_outputs = self.discriminator(target)  # kept for the discriminator's step
            with _frozen(self.discriminator):
                fake_outputs = self.discriminator(refined)
            g_adv = hinge_generator_loss(fake_outputs)
            g_fm = feature_matching_loss(real_outputs, fake_outputs)
            loss = loss + config.adversarial_weight * g_adv + config.feature_matching_weight * g_fm
            stats.update(g_adv=g_adv.item(), g_fm=g_fm.item())
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        if adversarial:
            d_loss = hinge_discriminator_loss(real_outputs, self.discriminator(refined.detach()))
            self.d_optimiser.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimiser.step()
            stats["d_loss"] = d_loss.item()
        stats["loss"] = loss.item()
        self.step += 1
        return stats


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, as frames are shown."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _psnr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@torch.no_grad()
def validate(model: Refiner, batches: Sequence[Batch]) -> dict[str, float]:
    """Mean PSNR (dB, on uint8 frames) of the warp alone and of the refiner on fixed pairs."""
    model.eval()
    warp_db, refined_db = [], []
    for batch in batches:
        target = _to_uint8(batch["target"])
        warped = _to_uint8(sample(batch["reference"], batch["grid"]))
        refined = _to_uint8(model(batch["reference"], batch["grid"], batch["guide"]))
        for index in range(len(target)):
            warp_db.append(_psnr_db(target[index], warped[index]))
            refined_db.append(_psnr_db(target[index], refined[index]))
    model.train()
    warp_mean, refined_mean = float(np.mean(warp_db)), float(np.mean(refined_db))
    return {
        "psnr_warp_db": warp_mean,
        "psnr_refined_db": refined_mean,
        "gain_db": refined_mean - warp_mean,
    }


def _stack(items: Sequence[Batch], batch_size: int) -> list[Batch]:
    return [
        {
            key: torch.stack([item[key] for item in items[start : start + batch_size]])
            for key in items[0]
        }
        for start in range(0, len(items), batch_size)
    ]


@dataclass
class RunData:
    """The run's training pairs, the validation batches and the clips they come from."""

    pairs: Dataset[Batch]
    val_batches: list[Batch]
    train_clips: list[str]
    val_clips: list[str]


def _pick(paths: list[Path], count: int) -> list[Path]:
    """`count` paths spread over the sorted list (all when count is 0)."""
    if not count or count >= len(paths):
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]


def load_run_data(config: TrainConfig) -> RunData:
    """Prepare (the first time) and load the training and validation clips of a run."""
    paths = _pick(list_clips(Path(config.data)), config.max_clips)
    train_clips = load_clips(paths, config.size_px, config.fps)
    weights = None
    if config.balance_people:
        by_name = dict(zip((p.name for p in paths), person_weights(paths), strict=True))
        weights = [by_name[clip.name] for clip in train_clips]
    pairs = ReenactmentPairs(
        train_clips,
        config.warp,
        seed=config.seed,
        drivers_per_reference=config.drivers_per_reference,
        crop_px=config.crop_px or None,
        augment=config.augment,
        color_jitter=config.color_jitter,
        reference_codec=config.reference_codec,
        clip_weights=weights,
    )
    val_clips = load_clips(
        _pick(list_clips(Path(config.val_data)), config.val_clips), config.size_px, config.fps
    )
    val_batches = validation_batches(val_clips, config)
    return RunData(pairs, val_batches, [c.name for c in train_clips], [c.name for c in val_clips])


def validation_batches(clips: Sequence[PreparedClip], config: TrainConfig) -> list[Batch]:
    """Fixed whole-frame pairs, unaugmented, for comparing the refiner with the warp."""
    pairs = ReenactmentPairs(
        clips,
        config.warp,
        seed=config.seed + 1,
        drivers_per_reference=1,
        augment=False,
        reference_codec=config.reference_codec,
    )
    items = [pairs[index] for index in tqdm(range(config.val_pairs), desc="validation pairs")]
    return _stack(items, config.batch_size)


def train(
    config: TrainConfig,
    out_dir: Path,
    data: RunData,
    resume: bool,
    max_minutes: float | None,
) -> Trainer:
    """Run (or continue) training until total_steps or the wall-clock limit (or Ctrl-C); the
    checkpoint is saved however it stops."""
    trainer = Trainer(config)
    checkpoint = out_dir / CHECKPOINT_NAME
    if resume:
        trainer.load(checkpoint)
        logger.info("resumed from %s at step %d", checkpoint, trainer.step)
    loader = DataLoader(
        data.pairs,
        batch_sampler=StepBatches(trainer.step, config.batch_size),
        num_workers=config.workers,
        # Forking after mediapipe has started its threads (the validation pairs) corrupts the
        # child's heap: workers start fresh.
        multiprocessing_context="spawn" if config.workers else None,
    )
    limit = TimeLimit(max_minutes)
    history: list[dict[str, float]] = []
    validation = validate(trainer.model, data.val_batches)
    append_log(out_dir, {"kind": "val", "step": trainer.step, **validation})
    progress = tqdm(total=config.total_steps, initial=trainer.step, unit="step", mininterval=10)
    batches = iter(loader)
    step_started = time.monotonic()
    try:
        while trainer.step < config.total_steps:
            history.append(trainer.train_step(next(batches)))
            progress.update(1)
            step = trainer.step
            if step % config.log_every_steps == 0:
                averages = means(history)
                seconds_per_step = (time.monotonic() - step_started) / len(history)
                progress.set_postfix({k: f"{v:.4g}" for k, v in averages.items()}, refresh=False)
                append_log(
                    out_dir,
                    {"kind": "train", "step": step, "s_per_step": seconds_per_step, **averages},
                )
                history.clear()
                step_started = time.monotonic()
            if step % config.val_every_steps == 0:
                validation = validate(trainer.model, data.val_batches)
                append_log(out_dir, {"kind": "val", "step": step, **validation})
                logger.info(
                    "step %d: validation PSNR warp %.2f dB, refined %.2f dB (%+.2f dB)",
                    step,
                    validation["psnr_warp_db"],
                    validation["psnr_refined_db"],
                    validation["gain_db"],
                )
            if step == config.warmup_steps:
                trainer.save(out_dir / WARMUP_CHECKPOINT_NAME)
            if step % config.checkpoint_every_steps == 0:
                trainer.save(checkpoint)
            if limit.reached:
                logger.info("stopping at step %d: %.0f minute limit", step, max_minutes)
                break
    finally:
        progress.close()
        trainer.save(checkpoint)  # resumable from wherever it stopped
    return trainer


def export(
    trainer: Trainer,
    path: Path,
    config: TrainConfig,
    data: RunData,
    validation: dict[str, float],
    commands: str,
) -> None:
    """Write the refiner's weights with what a model card needs in the metadata."""
    metadata = {
        "steps": str(trainer.step),
        "warp": config.warp,
        "train_clips": json.dumps(data.train_clips),
        "val_clips": json.dumps(data.val_clips),
        "val_pairs": str(config.val_pairs),
        "val_psnr_warp_db": f"{validation['psnr_warp_db']:.3f}",
        "val_psnr_refined_db": f"{validation['psnr_refined_db']:.3f}",
        "val_psnr_gain_db": f"{validation['gain_db']:.3f}",
        "train_config": json.dumps(asdict(config), sort_keys=True),
        "commands": commands,
    }
    save_refiner(trainer.model, path, metadata)
    logger.info("exported %s (validation gain %+.2f dB)", path, validation["gain_db"])


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m talkcodec.generator.train")
    add_run_flags(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    add_config_flags(parser, TrainConfig)
    return parser.parse_args(argv)


# What may change when a run continues: its length and bookkeeping, not what it learns from.
_RESUMABLE_FIELDS = {
    "total_steps",
    "warmup_steps",
    "workers",
    "val_every_steps",
    "checkpoint_every_steps",
    "log_every_steps",
}


def _resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: config.json of the run when resuming, defaults overridden by flags."""
    return resolve_config(TrainConfig, args, _RESUMABLE_FIELDS)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)  # the machine is shared
    cv2.setNumThreads(args.threads)
    config = _resolve_config(args)
    history = start_run(args.out, config, "talkcodec.generator.train", argv)
    data = load_run_data(config)
    logger.info(
        "%d training clips, %d validation pairs from %d clips",
        len(data.train_clips),
        config.val_pairs,
        len(data.val_clips),
    )
    if args.export_only:
        trainer = Trainer(config)
        trainer.load(args.out / CHECKPOINT_NAME)
    else:
        trainer = train(config, args.out, data, args.resume, args.max_minutes)
    if args.export is not None:
        validation = validate(trainer.model, data.val_batches)
        append_log(args.out, {"kind": "export", "step": trainer.step, **validation})
        export(trainer, args.export, config, data, validation, history.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
