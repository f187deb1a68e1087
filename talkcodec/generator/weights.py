"""Saving and loading the refiner's weights (safetensors, config in the metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from talkcodec.generator.refiner import Refiner, RefinerConfig
from talkcodec.training.weights_io import read_weights, write_weights

FORMAT = "talkcodec-refiner"
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_REFINER_WEIGHTS = WEIGHTS_DIR / "refiner-v1.safetensors"
TRAIN_COMMAND = "python -m talkcodec.generator.train --out runs/refiner --export " + str(
    Path("weights") / DEFAULT_REFINER_WEIGHTS.name
)


def save_refiner(model: Refiner, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the refiner's tensors and config (plus free-form string metadata) to `path`."""
    header = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    write_weights(model.state_dict(), path, {**header, **(metadata or {})})


def load_refiner(path: Path | None = None) -> tuple[Refiner, dict[str, str]]:
    """(refiner in eval mode, metadata) from a safetensors file (default: the shipped weights).

    Raises FileNotFoundError naming the file and the command that makes it, or ValueError when
    the file is not refiner weights.
    """
    path = Path(path or DEFAULT_REFINER_WEIGHTS)
    tensors, metadata = read_weights(path, "refiner", TRAIN_COMMAND)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} holds {metadata.get('format')!r} weights, expected {FORMAT!r}")
    try:
        config = RefinerConfig(**json.loads(metadata["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has no valid refiner config: {error}") from None
    model = Refiner(config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match its config: {error}") from None
    model.eval()
    return model, metadata
