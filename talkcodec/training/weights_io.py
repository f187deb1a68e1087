"""Weights files, the same for every network: safetensors tensors with string metadata (the
format name, the network's config, how it was trained). Nothing here is unpickled."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    import torch

Config = TypeVar("Config")
Module = TypeVar("Module", bound="torch.nn.Module")


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


def write_network(
    module: torch.nn.Module,
    config: Mapping[str, object],
    path: Path,
    fmt: str,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a network's tensors, its format name and its config (as JSON), plus free-form
    string metadata, to `path`."""
    header = {"format": fmt, "config": json.dumps(dict(config))}
    write_weights(module.state_dict(), path, {**header, **(metadata or {})})


def read_network(
    path: Path,
    what: str,
    fmt: str,
    make_command: str,
    make_config: Callable[[dict], Config],
) -> tuple[dict[str, torch.Tensor], dict[str, str], Config]:
    """(tensors, metadata, config) of a file write_network wrote in format `fmt`; the config
    is make_config of its JSON. FileNotFoundError names the file and the command that makes
    it; ValueError says the file holds other weights or no valid config."""
    tensors, metadata = read_weights(path, what, make_command)
    if metadata.get("format") != fmt:
        raise ValueError(f"{path} holds {metadata.get('format')!r} weights, expected {fmt!r}")
    try:
        config = make_config(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} has no valid {what} config: {error}") from None
    return tensors, metadata, config


def load_state(module: Module, tensors: Mapping[str, torch.Tensor], path: Path) -> Module:
    """`module` with `tensors` loaded, in eval mode; ValueError when they do not fit it."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match its config: {error}") from None
    return module.eval()
