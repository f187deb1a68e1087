"""The interface every renderer (the receiver's frame synthesiser) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from talkcodec.bank import DEFAULT_BANK_SIZE, ReferenceBank, describe
from talkcodec.keypoints.landmarks import Landmarks


class Renderer(ABC):
    """Re-synthesises each frame from a bank of decoded keyframes and that frame's landmarks.

    One renderer per stream. The bank holds up to `bank_size` references in slots 0..size-1
    (see talkcodec.bank); each frame renders from the slot whose face is nearest the
    current one. A subclass prepares whatever depends only on a reference once, when it
    arrives (prepare_reference), and renders a frame from that (render_from).
    """

    name: ClassVar[str]
    # Whether the renderer runs a network on an inference backend (--backend).
    uses_backend: ClassVar[bool] = False

    def __init__(self, bank_size: int = DEFAULT_BANK_SIZE) -> None:
        self._bank: ReferenceBank[Any] = ReferenceBank(bank_size)
        self._selected_reference_id: int | None = None
        self._image_size = (0, 0)  # (width, height) of the references

    @property
    def bank_size(self) -> int:
        return self._bank.size

    @property
    def selected_reference_id(self) -> int | None:
        """The slot the last render used; None before the first render after slot 0 arrived."""
        return self._selected_reference_id

    def set_reference(self, image: np.ndarray, landmarks: Landmarks, reference_id: int = 0) -> None:
        """Take a decoded keyframe ((H, W, 3) uint8 RGB) and its decoded landmarks (pixels of
        that image) into slot `reference_id`.

        Slot 0 empties the bank first (a fresh start: the stream began or the crop moved);
        slots 1..bank_size-1 are added or replaced. ValueError for an id outside the bank.
        """
        self._bank.check_id(reference_id)
        prepared = self.prepare_reference(image, landmarks)
        image_size = (image.shape[1], image.shape[0])
        self._bank.store(reference_id, describe(landmarks, image_size), prepared)
        self._image_size = image_size
        if reference_id == 0:
            self._selected_reference_id = None

    def reference_for(self, landmarks: Landmarks) -> tuple[int, Any]:
        """The slot the bank's rule picks for `landmarks`, and that reference as prepared.

        Raises RuntimeError before the first set_reference.
        """
        if not self._bank:
            raise RuntimeError(
                f"{self.name} renderer has no reference yet: call set_reference first"
            )
        reference_id = self._bank.select(describe(landmarks, self._image_size))
        return reference_id, self._bank.item(reference_id)

    def render(self, landmarks: Landmarks) -> np.ndarray:
        """The (H, W, 3) uint8 RGB frame whose landmarks are `landmarks` (pixels of the
        reference images). Raises RuntimeError before the first set_reference."""
        reference_id, prepared = self.reference_for(landmarks)
        self._selected_reference_id = reference_id
        return self.render_from(prepared, landmarks)

    @abstractmethod
    def prepare_reference(self, image: np.ndarray, landmarks: Landmarks) -> Any:
        """Everything that depends only on one reference (called once per reference).
        ValueError for an image the renderer cannot use."""

    @abstractmethod
    def render_from(self, prepared: Any, landmarks: Landmarks) -> np.ndarray:
        """The (H, W, 3) uint8 RGB frame for `landmarks`, from one prepared reference."""
