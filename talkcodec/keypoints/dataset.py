"""Clips for training and measuring: the clips of a folder, their landmark tracks as the
sender sees them (cached on disk for fitting models), and their test-condition face crops
(load_reference_clip). Training and evaluation both load clips here."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkcodec.config import cache_dir
from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.crop import CropBox, face_crop_target
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.frontend import FaceFrontend
from talkcodec.video import read_frames

logger = logging.getLogger(__name__)

_CACHE_VERSION = 2  # 2: pixel centres at integer coordinates


@dataclass(frozen=True)
class LandmarkTrack:
    """Landmarks of one clip at a fixed frame rate, in crop pixels.

    face: (T, N, 3) float32, NaN where no face was found. shoulders: (T, 2, 2) float32.
    """

    clip: str
    fps: float
    size: int
    face: np.ndarray
    shoulders: np.ndarray

    @property
    def found(self) -> np.ndarray:
        """(T,) bool: frames where a face was found."""
        return ~np.isnan(self.face[:, 0, 0])


def default_cache_dir() -> Path:
    return cache_dir("landmarks")


def clip_cache_key(clip: Path, *settings: object) -> str:
    """A short digest that changes whenever the clip file or any of `settings` changes."""
    stat = clip.stat()
    key = "|".join(
        str(part) for part in (clip.resolve(), stat.st_size, stat.st_mtime_ns, *settings)
    )
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _cache_path(cache_dir: Path, clip: Path, fps: float, size: int, crop: bool) -> Path:
    digest = clip_cache_key(clip, fps, size, crop, _CACHE_VERSION)
    return cache_dir / f"{clip.stem}-{digest}.npz"


def track_frames(
    name: str, frames: Iterable[np.ndarray], fps: float, size: int, crop: bool = True
) -> LandmarkTrack:
    """Run the sender's front end (mediapipe, default options) over frames and collect their
    landmarks. With crop=False the frames are taken to be the crops already (as a sender with
    `crop=False` sees them), and the landmarks are in their pixels."""
    faces, shoulders = [], []
    with make_detector("mediapipe") as detector:
        frontend = FaceFrontend(detector, size, crop=crop)
        for frame in frames:
            result = frontend.process(frame)
            if result.landmarks is None:
                faces.append(np.full((detector.num_face_points, 3), np.nan, np.float32))
                shoulders.append(np.full((2, 2), np.nan, np.float32))
            else:
                faces.append(result.landmarks.face)
                shoulders.append(result.landmarks.shoulders)
    return LandmarkTrack(name, fps, size, np.stack(faces), np.stack(shoulders))


def track_clip(
    clip: Path, fps: float, size: int, crop: bool = True, max_frames: int | None = None
) -> LandmarkTrack:
    """Run the sender's front end over a clip and collect its landmarks."""
    frames = (frame for _, frame in read_frames(clip, fps, max_frames=max_frames))
    return track_frames(clip.name, frames, fps, size, crop)


def save_track(track: LandmarkTrack, path: Path) -> None:
    np.savez_compressed(path, face=track.face, shoulders=track.shoulders)


def read_track(path: Path, clip: str, fps: float, size: int) -> LandmarkTrack:
    with np.load(path) as data:
        return LandmarkTrack(clip, fps, size, data["face"], data["shoulders"])


def load_tracks(
    clips: Sequence[Path],
    fps: float = 25.0,
    size: int = 256,
    cache_dir: Path | None = None,
    max_frames: int | None = None,
) -> list[LandmarkTrack]:
    """Tracks of many clips, computed once and then read from the cache."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tracks = []
    for clip in tqdm(clips, desc="landmarks", unit="clip"):
        path = _cache_path(cache_dir, clip, fps, size, True)
        if path.exists():
            track = read_track(path, clip.name, fps, size)
        else:
            track = track_clip(clip, fps, size)
            save_track(track, path)
        if max_frames is not None:
            track = LandmarkTrack(
                track.clip, fps, size, track.face[:max_frames], track.shoulders[:max_frames]
            )
        tracks.append(track)
    return tracks


def list_clips(folder: Path) -> list[Path]:
    """Video files in a folder, sorted by name."""
    suffixes = {".mp4", ".mov", ".avi", ".mkv", ".webm"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)


@dataclass(frozen=True)
class ReferenceClip:
    """The frames every codec is fed and judged against: a fixed face-centred square crop.

    frames: (T, S, S, 3) uint8 RGB. box: the crop in source pixels. source_size: (W, H).
    """

    clip: str
    fps: float
    frames: np.ndarray
    box: CropBox
    source_size: tuple[int, int]


def fixed_face_box(
    frames: Iterable[np.ndarray], detector: LandmarkDetector, crop_scale: float = 1.9
) -> CropBox | None:
    """The median of the talking-head crops of `frames`, moved and shrunk to lie inside them.

    Sources that are face crops already would otherwise get a square larger than the frame,
    filled by repeating its edges. None when no frame shows a face.
    """
    boxes, frame_size = [], (0, 0)
    for frame in frames:
        frame_size = (frame.shape[1], frame.shape[0])
        landmarks = detector.detect(frame)
        if landmarks is not None:
            box = face_crop_target(landmarks, crop_scale)
            boxes.append((box.x0 + box.side / 2, box.y0 + box.side / 2, box.side))
    if not boxes:
        return None
    centre_x, centre_y, side = np.median(np.array(boxes), axis=0)
    width, height = frame_size
    side = min(side, width, height)
    x0 = float(np.clip(centre_x - side / 2, 0, width - side))
    y0 = float(np.clip(centre_y - side / 2, 0, height - side))
    return CropBox(x0, y0, float(side))


def load_reference_clip(
    clip: Path, size: int, fps: float = 25.0, max_frames: int | None = 250, settle_s: float = 1.0
) -> ReferenceClip | None:
    """Test-condition frames of a clip: the crop fixed from its first `settle_s` seconds.

    Follows the JVET generative face video coding conditions (a face-centred square per
    sequence, resampled to size x size). None when no face shows in the first second.
    """
    settle_frames = max(1, round(settle_s * fps))
    with make_detector("mediapipe", pose_every_n_frames=0) as detector:
        box = fixed_face_box(
            (frame for _, frame in read_frames(clip, fps, settle_frames)), detector
        )
    if box is None:
        return None
    crops, source_size = [], (0, 0)
    for _, frame in read_frames(clip, fps, max_frames):
        source_size = (frame.shape[1], frame.shape[0])
        crops.append(box.extract(frame, size))
    return ReferenceClip(clip.name, fps, np.stack(crops), box, source_size)
