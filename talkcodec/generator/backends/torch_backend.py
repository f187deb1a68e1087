"""The reference backend: the refiner in PyTorch on the CPU, fp32 or bf16 autocast."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from talkcodec.generator.backends.base import RefinerBackend, default_threads
from talkcodec.generator.backends.onnx_export import resolve_weights
from talkcodec.generator.refiner import GUIDE_CHANNELS
from talkcodec.generator.weights import load_refiner

PRECISIONS = ("fp32", "bf16")


class TorchBackend(RefinerBackend):
    """The refiner as trained. precision "bf16" runs it under torch.autocast on the CPU.

    threads sets torch's intra-op thread count, which is process-wide (torch has no per-model
    setting); None leaves torch's own choice.
    """

    def __init__(
        self,
        weights_path: Path | None = None,
        size_px: int = 256,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(size_px, GUIDE_CHANNELS)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        self.precision = precision
        self.name = "torch" if precision == "fp32" else f"torch-{precision}"
        self.weights_path = resolve_weights(weights_path)
        self.refiner, _ = load_refiner(self.weights_path)
        if threads is not None:
            torch.set_num_threads(threads)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_reference(self, reference: np.ndarray) -> torch.Tensor:
        """(1, 3, H, W) -> features (1, F, H/4, W/4), a torch tensor (bf16 under bf16)."""
        reference_tensor = torch.from_numpy(self._reference_input(reference))
        with self._autocast():
            return self.refiner.reference_encoder(reference_tensor)

    @torch.inference_mode()
    def refine(
        self, reference: np.ndarray, features: object, grid: np.ndarray, guide: np.ndarray
    ) -> np.ndarray:
        reference, grid, guide = self._refine_inputs(reference, grid, guide)
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must come from {self.name}.encode_reference")
        with self._autocast():
            frame = self.refiner.frame_refiner(
                torch.from_numpy(reference),
                features,
                torch.from_numpy(grid),
                torch.from_numpy(guide),
            )
        return frame.float().numpy()  # (1, 3, H, W)

    def describe(self) -> str:
        threads = torch.get_num_threads()
        return (
            f"{self.name}: torch {torch.__version__} {self.precision} on CPU, {threads} threads "
            f"(of {default_threads()} cores), weights {self.weights_path.name}, "
            f"{self.size_px}x{self.size_px}"
        )
