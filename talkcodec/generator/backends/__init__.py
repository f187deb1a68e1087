"""Refiner backends and their registry, selected by name (`--backend`).

"auto" is not a backend but a rule: tensorrt when `tensorrt` (10.x) imports and torch sees a
CUDA GPU, else onnxruntime. Importing this package is cheap: each backend imports its runtime
(torch, onnxruntime, tensorrt) only when it is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from talkcodec.generator.backends.base import BackendUnavailable, RefinerBackend

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "BackendUnavailable",
    "RefinerBackend",
    "make_backend",
]

logger = logging.getLogger(__name__)

# (weights_path, size_px, threads, cache_dir) -> backend
BackendFactory = Callable[[Path | None, int, int | None, Path | None], RefinerBackend]


def _torch(
    weights_path: Path | None, size_px: int, threads: int | None, cache_dir: Path | None
) -> RefinerBackend:
    from talkcodec.generator.backends.torch_backend import TorchBackend

    return TorchBackend(weights_path, size_px, threads, precision="fp32")


def _torch_bf16(
    weights_path: Path | None, size_px: int, threads: int | None, cache_dir: Path | None
) -> RefinerBackend:
    from talkcodec.generator.backends.torch_backend import TorchBackend

    return TorchBackend(weights_path, size_px, threads, precision="bf16")


def _onnxruntime(
    weights_path: Path | None, size_px: int, threads: int | None, cache_dir: Path | None
) -> RefinerBackend:
    from talkcodec.generator.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(weights_path, size_px, threads, cache_dir)


def _tensorrt(
    weights_path: Path | None, size_px: int, threads: int | None, cache_dir: Path | None
) -> RefinerBackend:
    from talkcodec.generator.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(weights_path, size_px, threads, cache_dir)


BACKENDS: dict[str, BackendFactory] = {
    "torch": _torch,
    "torch-bf16": _torch_bf16,
    "onnxruntime": _onnxruntime,
    "tensorrt": _tensorrt,
}
BACKEND_CHOICES = ("auto", *BACKENDS)


def auto_backend_name() -> str:
    """The backend "auto" stands for here: tensorrt with TensorRT 10 and a GPU, else onnxruntime."""
    from talkcodec.generator.backends.tensorrt_backend import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        logger.info("backend auto: tensorrt (TensorRT and a CUDA GPU found)")
        return "tensorrt"
    logger.info("backend auto: onnxruntime (tensorrt unavailable: %s)", reason)
    return "onnxruntime"


def make_backend(
    name: str,
    weights_path: Path | None = None,
    size_px: int = 256,
    threads: int | None = None,
    *,
    cache_dir: Path | None = None,
) -> RefinerBackend:
    """A refiner backend by name ("auto" or a key of BACKENDS) for frames of size_px.

    weights_path None: the shipped weights. threads None: every core (CPU backends).
    cache_dir None: ~/.cache/talkcodec (ONNX exports, TensorRT engines). Raises ValueError
    naming the valid names, BackendUnavailable when the backend cannot run here, and
    FileNotFoundError/ValueError for missing or invalid weights.
    """
    if name == "auto":
        name = auto_backend_name()
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}"
        ) from None
    backend = factory(weights_path, size_px, threads, cache_dir)
    logger.info("refiner backend %s", backend.describe())
    return backend
