"""The GPU backend: TensorRT 10 FP16 engines built from the refiner's ONNX export.

Engines are built once and cached on disk (cache_root()/tensorrt), named by a key over the ONNX
file's hash, tensorrt.__version__ and the GPU's name, so new weights, a TensorRT upgrade or
another GPU each build a fresh engine. Inference uses torch CUDA tensors as the engines' buffers
(set_tensor_address + execute_async_v3 on a torch.cuda stream), so no pycuda is needed.

tensorrt is imported only here and only when the backend is made; without it, or without a
CUDA GPU, the backend raises BackendUnavailable saying what to install. TensorRT 11 removed the
BuilderFlag.FP16 path this backend uses, hence the pin to 10.x.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from talkcodec.generator.backends.base import BackendUnavailable, RefinerBackend, check_size
from talkcodec.generator.backends.onnx_export import (
    FRAME_REFINER_INPUTS,
    REFERENCE_ENCODER_INPUTS,
    cache_root,
    cached_onnx,
    file_sha256,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'it needs TensorRT 10 (pip install "tensorrt>=10,<11"), a CUDA build of torch and '
    "an NVIDIA GPU with CUDA"
)
WORKSPACE_BYTES = 1 << 30


def tensorrt_unavailable_reason() -> str | None:
    """Why the tensorrt backend cannot run here, or None when tensorrt 10 and a GPU are present."""
    try:
        import tensorrt
    except (ImportError, OSError) as error:  # OSError: the wheel is there, libnvinfer is not
        return f"tensorrt does not import ({error})"
    if not tensorrt.__version__.startswith("10."):
        return f"found TensorRT {tensorrt.__version__}"
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


def build_engine(trt: Any, onnx_path: Path, trt_logger: Any) -> bytes:
    """A serialised FP16 engine for the ONNX file (static shapes, float32 inputs and outputs)."""
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    return bytes(serialized)


def engine_path(trt: Any, onnx_path: Path, engine_dir: Path, gpu_name: str) -> Path:
    """Where the engine for this ONNX file, TensorRT version and GPU lives."""
    key = f"{file_sha256(onnx_path)}|tensorrt {trt.__version__}|{gpu_name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return engine_dir / f"{onnx_path.stem}-{digest}.engine"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as staged:
            staged.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


class _Engine:
    """One engine and its execution context; outputs go to buffers allocated once."""

    def __init__(self, trt: Any, serialized: bytes, trt_logger: Any) -> None:
        import torch

        self._runtime = trt.Runtime(trt_logger)  # must outlive the engine
        self.engine = self._runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialise the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(index) for index in range(self.engine.num_io_tensors)]
        self.shapes = {name: tuple(self.engine.get_tensor_shape(name)) for name in names}
        for name in names:
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise RuntimeError(f"engine tensor {name!r} is not float32")
        is_input = {
            name: self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names
        }
        self.inputs = [name for name in names if is_input[name]]
        self.outputs = {
            name: torch.empty(self.shapes[name], dtype=torch.float32, device="cuda")
            for name in names
            if not is_input[name]
        }
        for name, buffer in self.outputs.items():
            self.context.set_tensor_address(name, buffer.data_ptr())

    def run(
        self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream
    ) -> dict[str, torch.Tensor]:
        """Enqueue one run on `stream`; the returned buffers are overwritten by the next run."""
        for name in self.inputs:
            tensor = inputs[name]
            if tuple(tensor.shape) != self.shapes[name] or not tensor.is_contiguous():
                raise ValueError(
                    f"{name} must be contiguous {self.shapes[name]}, got {tensor.shape}"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to enqueue the engine")
        return self.outputs


class TensorRTBackend(RefinerBackend):
    """TensorRT FP16 on the first CUDA GPU. threads is ignored (the work runs on the GPU).

    cache_dir: root of the caches (None: ~/.cache/talkcodec); ONNX in onnx/, engines in
    tensorrt/.
    """

    name = "tensorrt"

    def __init__(
        self,
        weights_path: Path | None = None,
        size_px: int = 256,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(
                f"the tensorrt backend cannot run here: {reason}; {INSTALL_HINT}"
            )
        import tensorrt as trt
        import torch

        check_size(size_px)
        root = Path(cache_dir) if cache_dir is not None else cache_root()
        self.models = cached_onnx(weights_path, size_px, root)
        self.gpu_name = torch.cuda.get_device_name()
        self._trt_version = trt.__version__
        self._engine_dir = root / "tensorrt"
        trt_logger = trt.Logger(trt.Logger.WARNING)
        self._encoder = self._load_engine(trt, self.models.reference_encoder, trt_logger)
        self._refiner = self._load_engine(trt, self.models.frame_refiner, trt_logger)
        super().__init__(size_px, self._refiner.shapes["guide"][1])
        self._stream = torch.cuda.Stream()
        # Staging buffers for the per-frame inputs; the features stay where encoding left them.
        self._frame_inputs = {
            name: torch.empty(self._refiner.shapes[name], dtype=torch.float32, device="cuda")
            for name in FRAME_REFINER_INPUTS
            if name != "reference_features"
        }

    def _load_engine(self, trt: Any, onnx_path: Path, trt_logger: Any) -> _Engine:
        """The cached engine for onnx_path, built (and cached) when absent or unreadable."""
        path = engine_path(trt, onnx_path, self._engine_dir, self.gpu_name)
        if path.is_file():
            try:
                return _Engine(trt, path.read_bytes(), trt_logger)
            except RuntimeError as error:
                logger.warning("rebuilding the TensorRT engine %s: %s", path, error)
        logger.info("building a TensorRT FP16 engine from %s (takes a minute or so)", onnx_path)
        serialized = build_engine(trt, onnx_path, trt_logger)
        _write_atomically(path, serialized)
        logger.info("cached the TensorRT engine in %s", path)
        return _Engine(trt, serialized, trt_logger)

    def encode_reference(self, reference: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) -> features (1, F, H/4, W/4), a CUDA tensor kept for `refine`."""
        import torch

        (input_name,) = REFERENCE_ENCODER_INPUTS
        staged = self._frame_inputs["reference"]
        with torch.cuda.stream(self._stream):
            staged.copy_(torch.from_numpy(self._reference_input(reference)))
            (features,) = self._encoder.run({input_name: staged}, self._stream).values()
            features = features.clone()  # the engine's buffer is reused by the next reference
        self._stream.synchronize()
        return features

    def refine(
        self, reference: np.ndarray, features: object, grid: np.ndarray, guide: np.ndarray
    ) -> np.ndarray:
        import torch

        if not (isinstance(features, torch.Tensor) and features.is_cuda):
            raise TypeError(f"features must come from {self.name}.encode_reference")
        reference, grid, guide = self._refine_inputs(reference, grid, guide)
        with torch.cuda.stream(self._stream):
            for name, array in (("reference", reference), ("grid", grid), ("guide", guide)):
                self._frame_inputs[name].copy_(torch.from_numpy(array))
            inputs = {**self._frame_inputs, "reference_features": features}
            (frame,) = self._refiner.run(inputs, self._stream).values()
            frame_host = frame.cpu()  # (1, 3, H, W)
        self._stream.synchronize()
        return frame_host.numpy()

    def describe(self) -> str:
        return (
            f"{self.name}: TensorRT {self._trt_version} fp16 on {self.gpu_name}, engines in "
            f"{self._engine_dir}, {self.size_px}x{self.size_px}"
        )
