"""Exporting the refiner to ONNX, and the on-disk cache of exports the backends share.

Two files, fixed shapes (batch 1, one frame size), opset ONNX_OPSET:

reference_encoder.onnx
    input  "reference"           (1, 3, S, S)      float32 in [0, 1]
    output "features"            (1, F, S/4, S/4)  float32
frame_refiner.onnx
    input  "reference"           (1, 3, S, S)      float32 in [0, 1]
    input  "reference_features"  (1, F, S/4, S/4)  float32, from reference_encoder.onnx
    input  "grid"                (1, S, S, 2)      float32, normalised sampling positions
    input  "guide"               (1, 3, S, S)      float32, the warp's guide channels
    output "frame"               (1, 3, S, S)      float32 in [0, 1]

Exports use torch's dynamo exporter (torch.export), the one torch 2.9+ maintains (the
TorchScript one also works here but is deprecated). They are cached in
~/.cache/talkcodec/onnx/<key>/, the key made of the weights file's hash, the talkcodec version,
the opset and the size, so new weights, a new release or another size never reuse a stale graph;
`talkcodec export onnx` copies from the same cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import talkcodec
from talkcodec.config import cache_dir
from talkcodec.generator.backends.base import check_size

if TYPE_CHECKING:
    import torch

    from talkcodec.generator.refiner import Refiner

logger = logging.getLogger(__name__)

# grid_sample needs opset 16; 18 is read by ONNX Runtime and by TensorRT 10's parser alike.
ONNX_OPSET = 18
REFERENCE_ENCODER_FILE = "reference_encoder.onnx"
FRAME_REFINER_FILE = "frame_refiner.onnx"
REFERENCE_ENCODER_INPUTS = ("reference",)
REFERENCE_ENCODER_OUTPUTS = ("features",)
FRAME_REFINER_INPUTS = ("reference", "reference_features", "grid", "guide")
FRAME_REFINER_OUTPUTS = ("frame",)


@dataclass(frozen=True)
class OnnxModels:
    """The two exported files of one refiner at one size."""

    reference_encoder: Path
    frame_refiner: Path


def cache_root() -> Path:
    """~/.cache/talkcodec (or $XDG_CACHE_HOME/talkcodec): exports and TensorRT engines."""
    return cache_dir()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights_path: Path | None) -> Path:
    """The weights file to use (default: the shipped one); FileNotFoundError when absent."""
    from talkcodec.generator.weights import DEFAULT_REFINER_WEIGHTS, TRAIN_COMMAND

    path = Path(weights_path or DEFAULT_REFINER_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(
            f"refiner weights not found: {path} (train them with `{TRAIN_COMMAND}`)"
        )
    return path


def export_onnx(refiner: Refiner, size_px: int, out_dir: Path) -> OnnxModels:
    """Write both halves of `refiner` to out_dir and check them with onnx.checker.

    Raises ValueError for a size the refiner cannot run at.
    """
    import onnx
    import torch

    from talkcodec.generator.refiner import GUIDE_CHANNELS

    check_size(size_px)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refiner = refiner.eval()
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, size_px, size_px, generator=generator)  # (1, 3, S, S)
    with torch.no_grad():
        features = refiner.reference_encoder(reference)  # (1, F, S/4, S/4)
    grid = torch.rand(1, size_px, size_px, 2, generator=generator) * 2 - 1  # (1, S, S, 2)
    guide = torch.rand(1, GUIDE_CHANNELS, size_px, size_px, generator=generator)
    models = OnnxModels(out_dir / REFERENCE_ENCODER_FILE, out_dir / FRAME_REFINER_FILE)
    export_module(
        refiner.reference_encoder,
        (reference,),
        models.reference_encoder,
        REFERENCE_ENCODER_INPUTS,
        REFERENCE_ENCODER_OUTPUTS,
    )
    export_module(
        refiner.frame_refiner,
        (reference, features, grid, guide),
        models.frame_refiner,
        FRAME_REFINER_INPUTS,
        FRAME_REFINER_OUTPUTS,
    )
    for path in (models.reference_encoder, models.frame_refiner):
        onnx.checker.check_model(str(path), full_check=True)
    return models


def describe_onnx(path: Path) -> str:
    """A model's inputs and outputs, e.g. "reference(1x3x256x256) -> features(1x32x64x64)"."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def described(value: onnx.ValueInfoProto) -> str:
        dims = value.type.tensor_type.shape.dim
        return f"{value.name}({'x'.join(str(dim.dim_value or dim.dim_param) for dim in dims)})"

    inputs = ", ".join(described(value) for value in graph.input)
    outputs = ", ".join(described(value) for value in graph.output)
    return f"{inputs} -> {outputs}"


def export_module(
    network: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
) -> None:
    """Export `network` with fixed-shape example inputs to `path` (ONNX_OPSET, the dynamo
    exporter, one self-contained file)."""
    import torch

    with _quiet_exporter():
        torch.onnx.export(
            network,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter for the duration of an export.

    It logs the torchvision ops it skips, each graph pass (at INFO) and deprecations inside
    torch itself; none of it concerns these networks, and real failures still raise.
    """
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    previous_levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            yield
    finally:
        for each, level in zip(loggers, previous_levels, strict=True):
            each.setLevel(level)


def cache_key(weights_path: Path, size_px: int) -> str:
    """The cache folder name for these weights at this size, with this exporter."""
    digest = file_sha256(weights_path)[:16]
    return f"{digest}-talkcodec{talkcodec.__version__}-opset{ONNX_OPSET}-{size_px}px"


def cached_onnx(
    weights_path: Path | None, size_px: int, cache_dir: Path | None = None
) -> OnnxModels:
    """The ONNX export of these weights at this size, exported on first use.

    Exports live in cache_dir/onnx (cache_dir defaults to cache_root()). Raises
    FileNotFoundError or ValueError (from load_refiner) for missing or invalid weights.
    """
    from talkcodec.generator.weights import load_refiner

    check_size(size_px)
    weights_path = resolve_weights(weights_path)
    cache_dir = (Path(cache_dir) if cache_dir is not None else cache_root()) / "onnx"
    folder = cache_dir / cache_key(weights_path, size_px)
    models = OnnxModels(folder / REFERENCE_ENCODER_FILE, folder / FRAME_REFINER_FILE)
    if models.reference_encoder.is_file() and models.frame_refiner.is_file():
        logger.debug("reusing the ONNX export in %s", folder)
        return models
    refiner, _ = load_refiner(weights_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Export beside the final folder and rename, so a concurrent reader never sees half a file.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache_dir))
    try:
        export_onnx(refiner, size_px, staging)
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():  # another process did not win the race: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported the refiner (%s) to ONNX in %s", weights_path.name, folder)
    return models


def export_to_folder(
    weights_path: Path | None, size_px: int, out_dir: Path, cache_dir: Path | None = None
) -> OnnxModels:
    """Copies of the (cached) export in out_dir, checked again with onnx.checker there."""
    import onnx

    cached = cached_onnx(weights_path, size_px, cache_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = OnnxModels(out_dir / REFERENCE_ENCODER_FILE, out_dir / FRAME_REFINER_FILE)
    for source, target in zip(
        (cached.reference_encoder, cached.frame_refiner),
        (models.reference_encoder, models.frame_refiner),
        strict=True,
    ):
        shutil.copyfile(source, target)
        onnx.checker.check_model(str(target), full_check=True)
    return models
