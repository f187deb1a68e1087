"""The interface every refiner backend implements, and the error for one that cannot run here.

A backend runs the two halves of the GAN refiner (talkcodec/generator/refiner.py) at one fixed
frame size: `encode_reference` once per reference, `refine` every frame. Arrays cross the
interface as float32 numpy arrays with a batch of one; the cached features are opaque (each
backend keeps them where its network wants them: a torch tensor, a numpy array, GPU memory).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import numpy as np


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (a package or a GPU is missing). Says what to install."""


def default_threads() -> int:
    """The CPU cores this process may run on (all of them unless pinned by affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_size(size_px: int) -> None:
    """The refiner halves the frame twice and doubles it back, so sides are multiples of 4."""
    if size_px < 8 or size_px % 4:
        raise ValueError(f"refiner size must be a multiple of 4 and at least 8 px, got {size_px}")


class RefinerBackend(ABC):
    """Runs ReferenceEncoder and FrameRefiner on one (1, 3, size, size) frame at a time."""

    name: str

    def __init__(self, size_px: int, guide_channels: int) -> None:
        check_size(size_px)
        self.size_px = size_px
        self.guide_channels = guide_channels

    @abstractmethod
    def encode_reference(self, reference: np.ndarray) -> object:
        """reference (1, 3, H, W) float32 in [0, 1] -> features to pass to `refine` unchanged."""

    @abstractmethod
    def refine(
        self, reference: np.ndarray, features: object, grid: np.ndarray, guide: np.ndarray
    ) -> np.ndarray:
        """The refined frame (1, 3, H, W) float32 in [0, 1].

        reference (1, 3, H, W) the reference `features` came from; grid (1, H, W, 2) the warp's
        normalised sampling positions (align_corners=True); guide (1, guide_channels, H, W).
        """

    @abstractmethod
    def describe(self) -> str:
        """One line: the backend, its precision, where it runs and with how many threads."""

    def _frame_input(self, name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """`array` as contiguous float32, after checking it has `shape`."""
        if tuple(array.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(array.shape)}")
        return np.ascontiguousarray(array, dtype=np.float32)

    def _reference_input(self, reference: np.ndarray) -> np.ndarray:
        size = self.size_px
        return self._frame_input("reference", reference, (1, 3, size, size))

    def _refine_inputs(
        self, reference: np.ndarray, grid: np.ndarray, guide: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reference, grid, guide) checked against this backend's size, as float32."""
        size = self.size_px
        return (
            self._reference_input(reference),
            self._frame_input("grid", grid, (1, size, size, 2)),
            self._frame_input("guide", guide, (1, self.guide_channels, size, size)),
        )
