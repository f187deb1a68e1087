"""Weights files, the same for every network: safetensors tensors with string metadata (the
format name, the network's config, how it was trained). Nothing here is unpickled."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    import torch


def write_weights(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]
) -> None:
    """Write `tensors` (moved to the CPU, contiguous) and `metadata` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {name: value.detach().cpu().contiguous() for name, value in tensors.items()}
    save_file(cpu, str(path), metadata=dict(metadata))


def read_weights(
    path: Path, what: str, make_command: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a weights file. FileNotFoundError names the file and the command
    that makes it; ValueError says the file is not safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights not found: {path} (train them with `{make_command}`)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a safetensors file: {error}") from None
    return tensors, metadata
