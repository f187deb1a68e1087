"""Train a GC model on face crops of the training clips, resumable from checkpoints.

    python -m talkcodec.keyframe.gc.train --channels 8 --out runs/gc-c8 [--resume]

Phase 1 (warm-up, `warmup_steps`): distortion only (MSE + MS-SSIM). Phase 2: the multi-scale
discriminator joins, with the least-squares GAN loss and feature matching. Every step sends a
random prefix of the latent's channels (one of `channel_choices`), so one model codes at
several rates. The run's config is saved beside its checkpoints as config.json; at the end the
weights and the fitted prior are exported to `--export` (safetensors).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from talkcodec.keyframe.gc.alphabet import DOWNSAMPLING, NUM_LEVELS
from talkcodec.keyframe.gc.data import (
    CropSampler,
    crop_cache_path,
    default_cache_dir,
    load_face_crops,
    load_person_probabilities,
)
from talkcodec.keyframe.gc.model import GCModel, GCModelConfig
from talkcodec.keyframe.gc.quantiser import Quantiser
from talkcodec.keyframe.gc.selective import cell_channels, person_cells
from talkcodec.keyframe.gc.weights import export_weights, fit_prior_counts, load_weights
from talkcodec.keypoints.dataset import list_clips
from talkcodec.training.discriminator import MultiScaleDiscriminator
from talkcodec.training.losses import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    ms_ssim,
)
from talkcodec.training.run import (
    CHECKPOINT_NAME,
    WARMUP_CHECKPOINT_NAME,
    TimeLimit,
    add_config_flags,
    add_run_flags,
    load_checkpoint,
    means,
    resolve_config,
    save_checkpoint,
    start_run,
)

logger = logging.getLogger(__name__)


class MarginalRate(nn.Module):
    """Per-channel symbol counts, kept up to date during training to log the rate.

    A per-channel categorical only: the shipped context prior (prior.py) codes about 40% below
    what this logs; it is fitted once at export.

    counts: (C, L) float64 buffer (saved in checkpoints, not learned by gradient).
    """

    counts: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.ones(channels, NUM_LEVELS, dtype=torch.float64))

    @torch.no_grad()
    def update(self, symbols: torch.Tensor, active_channels: int, decay: float = 0.999) -> None:
        """Fold a batch of (B, C, h, w) symbols into the counts of its first `active_channels`."""
        flat = symbols[:, :active_channels].transpose(0, 1).reshape(active_channels, -1)
        batch = torch.zeros(active_channels, NUM_LEVELS, dtype=torch.float64)
        batch.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
        self.counts[:active_channels] = decay * self.counts[:active_channels] + batch

    def information(self) -> torch.Tensor:
        """(C, L) bits of each symbol of each channel under the counts."""
        return -torch.log2(self.counts / self.counts.sum(dim=1, keepdim=True))

    def bits(self, symbols: torch.Tensor, active_channels: int) -> torch.Tensor:
        """Total information content in bits of (B, C, h, w) symbols under the counts, per image."""
        info = self.information()
        per_symbol = torch.gather(
            info[None, :, None, None, :].expand(*symbols.shape, NUM_LEVELS),
            -1,
            symbols.unsqueeze(-1),
        ).squeeze(-1)
        return per_symbol[:, :active_channels].sum(dim=(1, 2, 3)).float()

    def soft_bits(
        self, latent: torch.Tensor, active_channels: int, quantiser: Quantiser
    ) -> torch.Tensor:
        """Differentiable bits per image of the first `active_channels` of a (B, C, h, w)
        unquantised latent: each value's soft assignment to the centres (the quantiser's
        softmax) times the information of each centre under the counts (not differentiated).
        A rate loss on it moves the encoder's values towards the cheap centres (the entropy
        term of Agustsson et al. 2017, with a per-channel marginal standing in for the
        shipped context prior)."""
        info = self.information()[:active_channels].float()  # (k, L)
        soft = quantiser.soft_assignment(latent[:, :active_channels])  # (B, k, h, w, L)
        return (soft * info[None, :, None, None, :]).sum(dim=(1, 2, 3, 4))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved as config.json beside its checkpoints."""

    channels: int = 8
    channel_choices: tuple[int, ...] = (2, 4, 8)
    channel_choice_weights: tuple[float, ...] = (0.2, 0.3, 0.5)
    data_dir: str = "../shared/data/train"
    crop_cache_size_px: int = 256
    sample_fps: float = 3.0
    frames_per_clip: int = 30
    crop_px: int = 128
    batch_size: int = 8
    warmup_steps: int = 3500
    total_steps: int = 5500
    learning_rate: float = 3e-4
    gan_learning_rate: float = 1e-4
    mse_weight: float = 100.0
    ms_ssim_weight: float = 3.0
    adversarial_weight: float = 0.1
    feature_matching_weight: float = 1.0
    # Loss per bit per pixel of the soft rate (MarginalRate.soft_bits) of ordinary steps, on
    # the first rate_channels of the step's channels (0: all of them); 0: the rate is set by
    # the channel count alone. Channels that start afresh (a widened latent) need to be left
    # out at first: the rate would pin them to one symbol before the generator learns to use
    # them.
    rate_weight: float = 0.0
    rate_channels: int = 0
    discriminator_scales: int = 2
    color_jitter: float = 0.05
    # Selective mode (selective.py): the share of steps that send all channels only on the
    # person and one of `selective_background_channels` (those below the step's channels) on
    # the rest, and the weight of the distortion loss on a background sent with 0 channels,
    # which the generator has to invent (the adversarial loss still sees it whole).
    selective_probability: float = 0.0
    selective_background_channels: tuple[int, ...] = (0, 2)
    synthesised_background_weight: float = 0.1
    seed: int = 0
    checkpoint_every_steps: int = 200
    log_every_steps: int = 50

    def __post_init__(self) -> None:
        for name in ("channel_choices", "channel_choice_weights", "selective_background_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.channel_choices) != len(self.channel_choice_weights):
            raise ValueError("channel_choices and channel_choice_weights differ in length")
        if self.crop_px % 16:
            raise ValueError(f"crop_px must be a multiple of 16, got {self.crop_px}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError("need 0 <= warmup_steps <= total_steps")
        if not 0 <= self.selective_probability <= 1:
            raise ValueError("selective_probability must be in 0..1")

    def model_config(self) -> GCModelConfig:
        return GCModelConfig(channels=self.channels, channel_choices=self.channel_choices)


class Trainer:
    """Owns the networks, optimisers, data sampler and step counter of one run."""

    def __init__(
        self, config: TrainConfig, crops: np.ndarray, person: np.ndarray | None = None
    ) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.model = GCModel(config.model_config())
        self.discriminator = MultiScaleDiscriminator(config.discriminator_scales)
        self.prior = MarginalRate(config.channels)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.d_optimiser = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.gan_learning_rate, betas=(0.5, 0.999)
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.selective_probability > 0 and person is None:
            raise ValueError("selective steps need the crops' person probabilities")
        self.sampler = CropSampler(
            crops,
            config.crop_px,
            config.batch_size,
            self.generator,
            config.color_jitter,
            person if config.selective_probability > 0 else None,
        )
        self.step = 0

    def state(self) -> dict[str, object]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "prior": self.prior.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "d_optimiser": self.d_optimiser.state_dict(),
            "sampler_rng": self.generator.get_state(),
        }

    def load_state(self, state: dict) -> None:  # type: ignore[type-arg]
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.prior.load_state_dict(state["prior"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.d_optimiser.load_state_dict(state["d_optimiser"])
        self.generator.set_state(state["sampler_rng"])

    def save(self, path: Path) -> None:
        save_checkpoint(self.state(), path)

    def load(self, path: Path) -> None:
        self.load_state(load_checkpoint(path, "GC"))

    def _active_channels(self) -> int:
        weights = torch.tensor(self.config.channel_choice_weights)
        index = int(torch.multinomial(weights, 1, generator=self.generator))
        return self.config.channel_choices[index]

    def _selective_counts(self, active: int) -> tuple[torch.Tensor, int] | None:
        """(B, h, w) channels per latent position and the background's channel count for a
        selective step, or None for an ordinary one (drawn with selective_probability)."""
        config = self.config
        choices = [b for b in config.selective_background_channels if b < active]
        if config.selective_probability == 0 or not choices:
            return None
        if float(torch.rand(1, generator=self.generator)) >= config.selective_probability:
            return None
        background = choices[int(torch.randint(len(choices), (1,), generator=self.generator))]
        assert self.sampler.last_person is not None
        cells = person_cells(self.sampler.last_person)
        return cell_channels(cells, active, background), background

    def train_step(self) -> dict[str, float]:
        config = self.config
        adversarial = self.step >= config.warmup_steps
        if adversarial:
            for group in self.optimiser.param_groups:
                group["lr"] = config.gan_learning_rate
        images = self.sampler.batch()  # (B, 3, crop, crop)
        active = self._active_channels()
        selective = self._selective_counts(active)
        counts = None if selective is None else selective[0]
        out = self.model(images, active, counts)
        reconstruction = out["reconstruction"]
        target = images
        weight = torch.ones_like(images[:, :1])
        if selective is not None and selective[1] == 0:
            # Where nothing was sent the picture is invented: only a light pull towards it.
            invented = F.interpolate((counts == 0).float()[:, None], scale_factor=DOWNSAMPLING)
            weight = 1 - (1 - config.synthesised_background_weight) * invented
            # MS-SSIM judges the person only: the invented part is compared with itself.
            target = images + invented * (reconstruction.detach().clamp(0, 1) - images)
        mse = torch.mean(weight * (reconstruction - images) ** 2)
        similarity = ms_ssim(reconstruction.clamp(0, 1), target).mean()
        loss = config.mse_weight * mse + config.ms_ssim_weight * (1 - similarity)
        stats = {"mse": mse.item(), "ms_ssim": similarity.item(), "channels": float(active)}
        if config.rate_weight > 0 and selective is None:
            pixels = images.shape[2] * images.shape[3]
            priced = min(active, config.rate_channels or active)
            soft_bpp = self.prior.soft_bits(out["latent"], priced, self.model.quantiser).mean()
            loss = loss + config.rate_weight * soft_bpp / pixels
            stats["soft_bpp"] = soft_bpp.item() / pixels
        if selective is not None:
            stats = {"selective_mse": mse.item(), "channels": float(active)}
        if adversarial:
            fake_outputs = self.discriminator(reconstruction)
            with torch.no_grad():
                real_outputs = self.discriminator(images)
            g_adv = generator_adversarial_loss(fake_outputs)
            g_fm = feature_matching_loss(real_outputs, fake_outputs)
            loss = loss + config.adversarial_weight * g_adv + config.feature_matching_weight * g_fm
            stats.update(g_adv=g_adv.item(), g_fm=g_fm.item())
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        if adversarial:
            d_loss = discriminator_loss(
                self.discriminator(images), self.discriminator(reconstruction.detach())
            )
            self.d_optimiser.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimiser.step()
            stats["d_loss"] = d_loss.item()
        if selective is None:  # the logged rate is that of whole latents
            self.prior.update(out["symbols"], active)
            bits = self.prior.bits(out["symbols"], active).mean()
            stats["bpp"] = float(bits) / (images.shape[2] * images.shape[3])
        stats["loss"] = loss.item()
        self.step += 1
        return stats


def _summary(history: list[dict[str, float]]) -> str:
    averages = means(history)
    parts = [f"{key}={value:.4g}" for key, value in averages.items() if key != "mse"]
    if "mse" in averages:
        parts.insert(0, f"psnr={-10 * math.log10(max(averages['mse'], 1e-10)):.2f}")
    return " ".join(parts)


def training_images(config: TrainConfig, clips: list[Path]) -> tuple[np.ndarray, np.ndarray | None]:
    """The run's face crops and, when it has selective steps, their person probabilities."""
    crops = load_face_crops(
        clips, config.crop_cache_size_px, config.sample_fps, config.frames_per_clip
    )
    if config.selective_probability == 0:
        return crops, None
    path = crop_cache_path(
        default_cache_dir(),
        clips,
        config.crop_cache_size_px,
        config.sample_fps,
        config.frames_per_clip,
    )
    return crops, load_person_probabilities(crops, path)


def initial_model_state(path: Path) -> dict[str, torch.Tensor]:
    """The GC model's state dict from exported weights (.safetensors) or a run's checkpoint.

    A new run may start from either (fine-tuning, or a new training phase with other settings);
    the discriminator, optimisers and step counter start afresh.
    """
    if path.suffix == ".safetensors":
        model, _, _ = load_weights(path)
        return model.state_dict()
    state = load_checkpoint(path, "GC", keys=())
    if "model" not in state:
        raise ValueError(f"{path} is neither GC weights nor a GC training checkpoint")
    return state["model"]  # type: ignore[no-any-return]


# The encoder's output layer (one row per latent channel) and the generator's first convolution
# (columns: latent * sent, then sent), the layers a change of latent width touches.
_LATENT_LAYER = "encoder.net.5"
_GENERATOR_INPUT = "generator.net.0.1.weight"


def latent_channels(state: dict[str, torch.Tensor]) -> int:
    """How many latent channels the GC model of a state dict produces."""
    return int(state[_LATENT_LAYER + ".bias"].shape[0])


def widened_state(
    state: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], keep: int | None = None
) -> dict[str, torch.Tensor]:
    """A state dict of a model with more latent channels that decodes like `state` did.

    `fresh` is the wider model's own (randomly initialised) state; `keep` (default: all of
    them) is how many of `state`'s latent channels to keep, the rest starting afresh too. The
    encoder's output layer keeps those channels first and takes the fresh rows for the new
    ones; the generator's first convolution, whose input is (latent * sent, sent), keeps their
    columns in the matching places and gets zeros for the new ones, so while the new channels
    are not sent (or until training moves those zeros) every kept rate decodes as before
    (to float rounding).
    """
    old, new = latent_channels(state), latent_channels(fresh)
    keep = old if keep is None else keep
    if not 0 < keep <= min(old, new):
        raise ValueError(
            f"cannot keep {keep} of {old} latent channels in a model of {new} "
            "(a GC model can widen, not narrow)"
        )
    widened = dict(state)
    for suffix in (".weight", ".bias"):
        rows = fresh[_LATENT_LAYER + suffix].clone()
        rows[:keep] = state[_LATENT_LAYER + suffix][:keep]
        widened[_LATENT_LAYER + suffix] = rows
    columns = torch.zeros_like(fresh[_GENERATOR_INPUT])
    columns[:, :keep] = state[_GENERATOR_INPUT][:, :keep]  # latent * sent
    columns[:, new : new + keep] = state[_GENERATOR_INPUT][:, old : old + keep]  # sent
    widened[_GENERATOR_INPUT] = columns
    return widened


def train(
    config: TrainConfig,
    out_dir: Path,
    resume: bool,
    max_minutes: float | None,
    init_from: Path | None = None,
    threads: int = 1,
    init_channels: int | None = None,
) -> Trainer:
    """Run (or continue) training until total_steps or the wall-clock limit; returns the trainer."""
    torch.set_num_threads(threads)
    clips = list_clips(Path(config.data_dir))
    crops, person = training_images(config, clips)
    logger.info("%d face crops from %d clips", len(crops), len(clips))
    trainer = Trainer(config, crops, person)
    checkpoint = out_dir / CHECKPOINT_NAME
    if resume:
        trainer.load(checkpoint)
        logger.info("resumed from %s at step %d", checkpoint, trainer.step)
    elif init_from is not None:
        state = initial_model_state(init_from)
        fresh = trainer.model.state_dict()
        if init_channels is not None or latent_channels(state) != latent_channels(fresh):
            state = widened_state(state, fresh, init_channels)
            logger.info("latent widened to %d channels", config.channels)
        trainer.model.load_state_dict(state)
        logger.info("model initialised from %s", init_from)
    limit = TimeLimit(max_minutes)
    history: list[dict[str, float]] = []
    progress = tqdm(total=config.total_steps, initial=trainer.step, unit="step", mininterval=10)
    while trainer.step < config.total_steps:
        history.append(trainer.train_step())
        progress.update(1)
        if trainer.step % config.log_every_steps == 0:
            logger.info("step %d %s", trainer.step, _summary(history))
            history.clear()
        if trainer.step == config.warmup_steps:
            trainer.save(out_dir / WARMUP_CHECKPOINT_NAME)
        if trainer.step % config.checkpoint_every_steps == 0:
            trainer.save(checkpoint)
        if limit.reached:
            logger.info("stopping at step %d: %.0f minute limit", trainer.step, max_minutes)
            break
    progress.close()
    trainer.save(checkpoint)
    return trainer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m talkcodec.keyframe.gc.train")
    add_run_flags(parser)
    parser.add_argument(
        "--weights-version",
        type=int,
        help="version number the exported weights (and every payload coded with them) carry; "
        "give each released set of weights its own",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: leaves the rest free)"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        help="start a new run from these GC weights (.safetensors) or a run's checkpoint.pt",
    )
    parser.add_argument(
        "--init-channels",
        type=int,
        help="with --init-from: keep only its first N latent channels, the others start afresh",
    )
    add_config_flags(parser, TrainConfig)
    return parser.parse_args(argv)


# Only the length of the run may change on resume; anything else would be a new run.
_RESUMABLE_FIELDS = {"total_steps", "warmup_steps", "checkpoint_every_steps", "log_every_steps"}


def _resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: config.json of the run when resuming, defaults overridden by flags."""
    return resolve_config(TrainConfig, args, _RESUMABLE_FIELDS)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    config = _resolve_config(args)
    history = start_run(args.out, config, "talkcodec.keyframe.gc.train", argv)
    if args.export_only:
        torch.set_num_threads(1)
        crops, person = training_images(config, list_clips(Path(config.data_dir)))
        trainer = Trainer(config, crops, person)
        trainer.load(args.out / CHECKPOINT_NAME)
    else:
        if args.init_from is not None and args.resume:
            raise SystemExit("--init-from starts a new run; it cannot be combined with --resume")
        trainer = train(
            config,
            args.out,
            args.resume,
            args.max_minutes,
            args.init_from,
            args.threads,
            args.init_channels,
        )
        crops = trainer.sampler.crops
    if args.export is not None:
        counts = fit_prior_counts(trainer.model, crops)
        metadata = {
            "steps": str(trainer.step),
            "train_config": json.dumps(asdict(config), sort_keys=True),
            "commands": history.read_text(),
            "training_crops": str(len(crops)),
        }
        export_weights(trainer.model, counts, args.export, metadata, args.weights_version)
        logger.info("exported %s", args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
