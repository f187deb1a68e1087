"""A training run's folder, the same for every trainer.

    RUN/config.json              the resolved TrainConfig (talkcodec.config.save_config)
    RUN/checkpoint.pt            the latest state (state dicts, optimisers, step, RNG), written
                                 atomically; read with torch.load(weights_only=True)
    RUN/checkpoint-warmup.pt     the state at the end of the warm-up phase
    RUN/commands.txt             every invocation of the run, for the model card
    RUN/log.jsonl                one JSON record per line (training means, validation)

Flags map 1:1 onto the TrainConfig fields (add_config_flags); a resumed run reloads its
config.json and may change only the fields a trainer names as resumable (its length and
bookkeeping, never what it learns from).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from talkcodec.config import save_config

CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "checkpoint.pt"
WARMUP_CHECKPOINT_NAME = "checkpoint-warmup.pt"
COMMANDS_NAME = "commands.txt"
LOG_NAME = "log.jsonl"

Config = TypeVar("Config")


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """--out, --resume, --export, --export-only and --max-minutes: every trainer has them."""
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--export", type=Path, help="write the trained weights here at the end")
    parser.add_argument("--export-only", action="store_true", help="export --out's checkpoint")
    parser.add_argument("--max-minutes", type=float, help="stop (resumably) after this long")


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of the dataclass `config_class` (--total-steps for total_steps),
    defaulting to None so that resolve_config can tell what was given."""
    for item in fields(config_class):
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        if isinstance(default, tuple):
            parser.add_argument(flag, type=type(default[0]), nargs="+", default=None)
        else:
            kind = parse_bool if isinstance(default, bool) else type(default)
            parser.add_argument(flag, type=kind, default=None)


def load_config(config_class: type[Config], path: Path) -> Config:
    return config_class(**json.loads(path.read_text()))


def resolve_config(
    config_class: type[Config], args: argparse.Namespace, resumable: Iterable[str]
) -> Config:
    """The run's config: its config.json when resuming or exporting (changing only fields in
    `resumable`), otherwise the defaults overridden by the flags; a new run never overwrites
    an existing one."""
    overrides = {
        item.name: getattr(args, item.name)
        for item in fields(config_class)  # type: ignore[arg-type]
        if getattr(args, item.name) is not None
    }
    if args.resume or args.export_only:
        saved = load_config(config_class, args.out / CONFIG_NAME)
        changed = {k for k, v in overrides.items() if v != getattr(saved, k)} - set(resumable)
        if changed:
            raise SystemExit(f"cannot change {', '.join(sorted(changed))} when resuming")
        return config_class(**{**asdict(saved), **overrides})  # type: ignore[call-overload]
    if (args.out / CHECKPOINT_NAME).exists():
        raise SystemExit(f"{args.out} holds a run already: pass --resume or another --out")
    return config_class(**overrides)


def start_run(out_dir: Path, config: object, module: str, argv: Sequence[str] | None) -> Path:
    """Create the run folder, save the resolved config and record this invocation; returns
    commands.txt (every invocation so far)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / CONFIG_NAME)
    arguments = sys.argv[1:] if argv is None else argv
    commands = out_dir / COMMANDS_NAME
    with commands.open("a") as log:
        log.write(f"python -m {module} " + " ".join(arguments) + "\n")
    return commands


def save_checkpoint(state: dict[str, object], path: Path) -> None:
    """Write a checkpoint atomically: never a half-written file behind, however it stops."""
    import torch

    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def load_checkpoint(
    path: Path, what: str, keys: Sequence[str] = ("step", "model")
) -> dict[str, Any]:
    """A checkpoint's state (weights_only: nothing is unpickled but tensors and plain data);
    ValueError in one line when `path` is not a `what` checkpoint holding `keys`."""
    import torch

    try:
        state = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a {what} training checkpoint: {error}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a {what} training checkpoint")
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"{path} is not a {what} training checkpoint: no {', '.join(missing)}")
    return state


def append_log(out_dir: Path, record: dict[str, object]) -> None:
    with (out_dir / LOG_NAME).open("a") as log:
        log.write(json.dumps(record) + "\n")


def means(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of every statistic over the steps of `history` that report it."""
    keys = sorted({key for stats in history for key in stats})
    return {key: float(np.mean([s[key] for s in history if key in s])) for key in keys}


class TimeLimit:
    """Whether a run has used its --max-minutes (None: no limit)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.max_minutes = max_minutes
        self._started = time.monotonic()

    @property
    def reached(self) -> bool:
        if self.max_minutes is None:
            return False
        return time.monotonic() - self._started > 60 * self.max_minutes
