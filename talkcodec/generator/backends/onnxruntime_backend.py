"""The default CPU backend: the refiner's ONNX export run by ONNX Runtime.

The export is made once per weights file and size, then reused from the cache
(see onnx_export.py for the folder, its key, and the models' input and output names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talkcodec.generator.backends.base import RefinerBackend, check_size, default_threads
from talkcodec.generator.backends.onnx_export import (
    FRAME_REFINER_INPUTS,
    REFERENCE_ENCODER_INPUTS,
    cached_onnx,
)


def cpu_session(path: Path, threads: int):  # noqa: ANN201 (onnxruntime.InferenceSession)
    """An ONNX Runtime session of the model at `path` on the CPU: fp32, all graph
    optimisations on, `threads` intra-op threads that sleep when idle."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads would otherwise busy-wait after each run and take the cores from
    # the receiver's other stages (measured: torch ran 3x slower right after a spinning
    # session); blocking costs about 3 ms per 256x256 frame on 2 cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend(RefinerBackend):
    """ONNX Runtime on the CPU, fp32, all graph optimisations on, idle threads that sleep.

    threads: intra-op threads of each session (None: every core this process may use).
    cache_dir: root of the caches (None: ~/.cache/talkcodec); exports live in its onnx/.
    """

    name = "onnxruntime"

    def __init__(
        self,
        weights_path: Path | None = None,
        size_px: int = 256,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        import onnxruntime

        check_size(size_px)
        self.models = cached_onnx(weights_path, size_px, cache_dir)
        self.threads = threads or default_threads()
        self._encoder = cpu_session(self.models.reference_encoder, self.threads)
        self._refiner = cpu_session(self.models.frame_refiner, self.threads)
        guide_shape = self._refiner.get_inputs()[FRAME_REFINER_INPUTS.index("guide")].shape
        super().__init__(size_px, int(guide_shape[1]))
        self._version = onnxruntime.__version__

    def encode_reference(self, reference: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) -> features (1, F, H/4, W/4) float32."""
        (input_name,) = REFERENCE_ENCODER_INPUTS
        (features,) = self._encoder.run(None, {input_name: self._reference_input(reference)})
        return features

    def refine(
        self, reference: np.ndarray, features: object, grid: np.ndarray, guide: np.ndarray
    ) -> np.ndarray:
        reference, grid, guide = self._refine_inputs(reference, grid, guide)
        if not isinstance(features, np.ndarray):
            raise TypeError(f"features must come from {self.name}.encode_reference")
        feeds = dict(zip(FRAME_REFINER_INPUTS, (reference, features, grid, guide), strict=True))
        (frame,) = self._refiner.run(None, feeds)
        return frame  # (1, 3, H, W)

    def describe(self) -> str:
        return (
            f"{self.name}: onnxruntime {self._version} fp32 on CPU, {self.threads} threads, "
            f"models in {self.models.frame_refiner.parent}, {self.size_px}x{self.size_px}"
        )
