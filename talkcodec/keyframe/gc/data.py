"""Training images for GC: face crops of frames sampled from clips, cached once as a .npy file.

The crops come from the sender's own front end (mediapipe face mesh, the same framing as a call),
so the codec learns the pictures it will be sent. The cache lives under ~/.cache/talkcodec/gc/,
never in the repository: frames of the clips must not be committed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from talkcodec.config import cache_dir
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.frontend import FaceFrontend
from talkcodec.video import read_frames

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1
# A crop upsampled more than this from its source is too blurry to teach detail (the full-body
# TED clips, whose faces are ~60 px); it is left out.
MAX_UPSAMPLING = 2.0


def default_cache_dir() -> Path:
    return cache_dir("gc")


def crop_cache_path(
    cache_dir: Path, clips: Sequence[Path], size: int, sample_fps: float, per_clip: int
) -> Path:
    """A file name that changes whenever the clips or the sampling change."""
    parts = [f"{size}|{sample_fps}|{per_clip}|{_CACHE_VERSION}"]
    for clip in clips:
        stat = clip.stat()
        parts.append(f"{clip.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    digest = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
    return cache_dir / f"crops-{size}-{digest}.npy"


def clip_face_crops(clip: Path, size: int, sample_fps: float, per_clip: int) -> list[np.ndarray]:
    """Up to `per_clip` (size, size, 3) uint8 face crops of `clip`, sampled at `sample_fps`."""
    crops = []
    with make_detector("mediapipe", pose_every_n_frames=0) as detector:
        frontend = FaceFrontend(detector, size, crop=True)
        for _, frame in read_frames(clip, sample_fps, max_frames=per_clip):
            result = frontend.process(frame)
            if result.landmarks is None or result.box.side * MAX_UPSAMPLING < size:
                continue
            crops.append(result.image)
    return crops


def load_face_crops(
    clips: Sequence[Path],
    size: int = 256,
    sample_fps: float = 3.0,
    per_clip: int = 30,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """(N, size, size, 3) uint8 face crops of all clips, computed once and then read from cache."""
    cache_dir = cache_dir or default_cache_dir()
    path = crop_cache_path(cache_dir, clips, size, sample_fps, per_clip)
    if path.exists():
        logger.info("face crops from cache %s", path)
        return np.load(path)
    crops: list[np.ndarray] = []
    for clip in tqdm(clips, desc="face crops", unit="clip"):
        found = clip_face_crops(clip, size, sample_fps, per_clip)
        logger.info("%s: %d crops", clip.name, len(found))
        crops.extend(found)
    if not crops:
        raise ValueError(f"no face found in any of {len(clips)} clips")
    stacked = np.stack(crops)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, stacked)
    logger.info("cached %d face crops in %s", len(stacked), path)
    return stacked


def load_person_probabilities(crops: np.ndarray, crops_path: Path | None = None) -> np.ndarray:
    """(N, H, W) uint8 person probability (0..255) of (N, H, W, 3) crops: mediapipe's selfie
    segmentation, as the sender runs it in selective mode. Cached beside `crops_path`."""
    from talkcodec.keypoints.segmentation import PersonSegmenter

    path = None if crops_path is None else crops_path.with_name(crops_path.stem + "-person.npy")
    if path is not None and path.exists():
        probabilities = np.load(path)
        if probabilities.shape == crops.shape[:3]:
            return probabilities
    segmenter = PersonSegmenter()
    try:
        probabilities = np.stack(
            [
                np.round(255 * np.clip(segmenter(crop), 0, 1)).astype(np.uint8)
                for crop in tqdm(crops, desc="person masks", unit="crop", mininterval=5)
            ]
        )
    finally:
        segmenter.close()
    if path is not None:
        np.save(path, probabilities)
    return probabilities


class CropSampler:
    """Random training batches from cached crops: a random crop, flips, small colour jitter.

    Every batch is drawn from `generator`, so a run with the same seed sees the same batches.
    With `person` ((N, H, W) uint8 person probabilities of the crops) each batch also carries
    the matching crop of it (`last_person`), for selective-mode steps.
    """

    def __init__(
        self,
        crops: np.ndarray,
        crop_px: int,
        batch_size: int,
        generator: torch.Generator,
        jitter: float = 0.05,
        person: np.ndarray | None = None,
    ) -> None:
        if crops.shape[1] < crop_px or crops.shape[2] < crop_px:
            raise ValueError(f"crops of {crops.shape[1:3]} are smaller than crop_px={crop_px}")
        if person is not None and person.shape != crops.shape[:3]:
            raise ValueError(f"person masks {person.shape} do not match crops {crops.shape}")
        self.crops = crops
        self.person = person
        self.last_person: torch.Tensor | None = None
        self.crop_px = crop_px
        self.batch_size = batch_size
        self.generator = generator
        self.jitter = jitter

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def batch(self) -> torch.Tensor:
        """(B, 3, crop_px, crop_px) float32 in [0, 1]."""
        height, width = self.crops.shape[1:3]
        images = []
        people = []
        for _ in range(self.batch_size):
            index = self._randint(len(self.crops))
            top = self._randint(height - self.crop_px + 1)
            left = self._randint(width - self.crop_px + 1)
            patch = self.crops[index, top : top + self.crop_px, left : left + self.crop_px]
            image = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float() / 255
            person = None
            if self.person is not None:
                region = self.person[index, top : top + self.crop_px, left : left + self.crop_px]
                person = torch.from_numpy(np.ascontiguousarray(region))[None].float() / 255
            if self._randint(2):
                image = image.flip(-1)
                person = None if person is None else person.flip(-1)
            images.append(image)
            if person is not None:
                people.append(person)
        batch = torch.stack(images)
        self.last_person = torch.stack(people) if people else None
        # Colour jitter: a per-image gain and offset per channel, as camera white balance varies.
        shape = (self.batch_size, 3, 1, 1)
        gain = 1 + self.jitter * (2 * torch.rand(shape, generator=self.generator) - 1)
        offset = self.jitter * (2 * torch.rand(shape, generator=self.generator) - 1)
        return (batch * gain + offset).clamp(0, 1)
