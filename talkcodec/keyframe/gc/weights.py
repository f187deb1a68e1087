"""Saving and loading GC weights (safetensors): the networks, the prior table and the config."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from talkcodec.keyframe.gc.model import GCModel, GCModelConfig
from talkcodec.keyframe.gc.prior import (
    NUM_CONTEXTS,
    context_counts,
    frequency_table,
    smoothed_counts,
)
from talkcodec.keyframe.gc.quantiser import NUM_LEVELS
from talkcodec.training.weights_io import read_weights, write_weights

logger = logging.getLogger(__name__)

FORMAT = "talkcodec-gc"
PRIOR_KEY = "prior.frequencies"
_MODEL_PREFIX = "model."
WEIGHTS_DIR = Path(__file__).resolve().parents[3] / "weights"
# The weights released with talkcodec, by the version their payloads carry: a payload names its
# version, so a receiver decodes keyframes coded with any released weights.
SHIPPED_WEIGHTS = {
    1: WEIGHTS_DIR / "gc-c8-v1.safetensors",
    2: WEIGHTS_DIR / "gc-c8-v2.safetensors",
    3: WEIGHTS_DIR / "gc-c16-v3.safetensors",
}
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS[max(SHIPPED_WEIGHTS)]


@torch.no_grad()
def latent_symbols(model: GCModel, crops: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(N, C, H/16, W/16) int8 symbols of (N, H, W, 3) uint8 crops through the encoder."""
    was_training = model.training
    model.eval()
    batches = []
    for start in range(0, len(crops), batch_size):
        batch = torch.from_numpy(crops[start : start + batch_size]).permute(0, 3, 1, 2)
        batches.append(model.analyse(batch.float() / 255).numpy().astype(np.int8))
    model.train(was_training)
    return np.concatenate(batches)


def fit_prior_counts(model: GCModel, crops: np.ndarray) -> np.ndarray:
    """(C, NUM_CONTEXTS, L) context counts of the symbols of whole (N, H, W, 3) uint8 crops."""
    return context_counts(latent_symbols(model, crops))


def export_weights(
    model: GCModel,
    counts: np.ndarray,
    path: Path,
    metadata: dict[str, str],
    version: int | None = None,
) -> None:
    """Write the encoder and generator, the prior's frequency table (from (C, NUM_CONTEXTS, L)
    context counts) and the config to `path`, with `version` (default: the model config's) as
    the weights version that GC payloads name."""
    config = model.config if version is None else replace(model.config, version=version)
    tensors = {_MODEL_PREFIX + name: value for name, value in model.state_dict().items()}
    table = frequency_table(smoothed_counts(counts))  # every entry >= 1: nothing impossible
    tensors[PRIOR_KEY] = torch.from_numpy(table.astype(np.int32))
    header = {"format": FORMAT, "model_config": config.to_json()}
    write_weights(tensors, path, {**header, **metadata})


def load_weights(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[GCModel, np.ndarray, dict[str, str]]:
    """(model in eval mode on `device`, (C, NUM_CONTEXTS, L) uint32 frequency table, metadata).

    Raises FileNotFoundError naming the file and how to make it, or ValueError when the file is
    not GC weights.
    """
    path = Path(path)
    command = f"python -m talkcodec.keyframe.gc.train --channels 8 --out runs/gc-c8 --export {path}"
    tensors, metadata = read_weights(path, "GC", command)
    if metadata.get("format") != FORMAT or PRIOR_KEY not in tensors:
        raise ValueError(f"{path} does not hold GC weights (format {metadata.get('format')!r})")
    config = GCModelConfig.from_json(metadata["model_config"])
    model = GCModel(config)
    state = {
        name[len(_MODEL_PREFIX) :]: value
        for name, value in tensors.items()
        if name.startswith(_MODEL_PREFIX)
    }
    model.load_state_dict(state)
    table = tensors[PRIOR_KEY].numpy().astype(np.uint32)
    if table.shape != (config.channels, NUM_CONTEXTS, NUM_LEVELS) or (table < 1).any():
        raise ValueError(f"{path}: prior table of shape {table.shape} does not fit the model")
    return model.to(device).eval(), table, metadata
