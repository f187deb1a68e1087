"""Saving and loading the refiner's weights (safetensors, config in the metadata)."""

from __future__ import annotations

from pathlib import Path

from talkcodec.generator.refiner import Refiner, RefinerConfig
from talkcodec.training.weights_io import load_state, read_network, write_network

FORMAT = "talkcodec-refiner"
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_REFINER_WEIGHTS = WEIGHTS_DIR / "refiner-v1.safetensors"
TRAIN_COMMAND = "python -m talkcodec.generator.train --out runs/refiner --export " + str(
    Path("weights") / DEFAULT_REFINER_WEIGHTS.name
)


def save_refiner(model: Refiner, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the refiner's tensors and config (plus free-form string metadata) to `path`."""
    write_network(model, model.config.to_dict(), path, FORMAT, metadata)


def load_refiner(path: Path | None = None) -> tuple[Refiner, dict[str, str]]:
    """(refiner in eval mode, metadata) from a safetensors file (default: the shipped weights).

    Raises FileNotFoundError naming the file and the command that makes it, or ValueError when
    the file is not refiner weights.
    """
    path = Path(path or DEFAULT_REFINER_WEIGHTS)
    tensors, metadata, config = read_network(
        path, "refiner", FORMAT, TRAIN_COMMAND, lambda raw: RefinerConfig(**raw)
    )
    return load_state(Refiner(config), tensors, path), metadata
