"""Training pairs for the refiner: self-reenactment within a clip, as the receiver sees it.

Each clip is prepared once: resampled to 25 fps and cut with one fixed face-centred square
(`keypoints.dataset.load_reference_clip`, the benchmarks' test conditions), its landmarks
detected on those crops by the sender's front end. Crops (uint8 .npy) and landmarks (.npz) are
cached per clip under ~/.cache/talkcodec/refiner/, never in the repository: frames of the clips
must not be committed. On load the landmarks go through the stream's keypoint model and
quantiser, so training sees the decoded keypoints the receiver renders from, and each reference
image goes through the keyframe codec, as the receiver's reference does.

A pair is (reference frame, driving frame) of one clip, both drawn uniformly, so large motions
appear: the warp is prepared on the reference, its flow for the driving frame's decoded
landmarks is the refiner's grid, and the driving frame is the target.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from talkcodec.config import EncoderConfig, cache_dir
from talkcodec.generator import make_renderer
from talkcodec.generator.base import Renderer
from talkcodec.generator.guide import draw_guide, normalised_grid
from talkcodec.keyframe import KeyframeCodec, make_keyframe_codec
from talkcodec.keypoints.dataset import (
    LandmarkTrack,
    clip_cache_key,
    load_reference_clip,
    read_track,
    save_track,
    track_frames,
)
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.replay import ReplayDetector

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1
NO_CODEC = "none"  # reference_codec value that keeps the reference frame as it is


def default_cache_dir() -> Path:
    return cache_dir("refiner")


def make_warp(name: str) -> Renderer:
    """A renderer whose `flow(landmarks)` gives the refiner its grid, by registry name.

    "headwarp" is also found in talkcodec.generator.headwarp before it is registered.
    Raises ValueError naming what is missing.
    """
    try:
        renderer = make_renderer(name)
    except ValueError:
        if name != "headwarp":
            raise
        try:
            from talkcodec.generator.headwarp import HeadWarpRenderer
        except ImportError as error:
            raise ValueError(
                f"warp 'headwarp' needs talkcodec.generator.headwarp.HeadWarpRenderer ({error}); "
                "use --warp meshwarp until it lands"
            ) from None
        renderer = HeadWarpRenderer()
    if not callable(getattr(renderer, "flow", None)):
        raise ValueError(f"renderer {name!r} has no flow(landmarks): it cannot drive the refiner")
    return renderer


@dataclass(frozen=True)
class PreparedClip:
    """One clip ready for self-reenactment.

    frames: (T, S, S, 3) uint8 RGB fixed crops (memory-mapped from the cache).
    face: (T, N, 3) float32 and shoulders: (T, 2, 2) float32, the landmarks the receiver
    decodes for each frame, in crop pixels; NaN where the sender found no face.
    """

    name: str
    frames: np.ndarray
    face: np.ndarray
    shoulders: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """(K,) int64 indices of the frames with a face."""
        return np.flatnonzero(~np.isnan(self.face[:, 0, 0]))

    def landmarks(self, index: int) -> Landmarks:
        return Landmarks(face=self.face[index], shoulders=self.shoulders[index])

    def __reduce__(self) -> tuple[object, ...]:
        # A data-loader worker reopens the cached frames instead of receiving a copy of them.
        filename = getattr(self.frames, "filename", None)
        if filename is None:
            return (PreparedClip, (self.name, self.frames, self.face, self.shoulders))
        return (_reopen_clip, (self.name, str(filename), self.face, self.shoulders))


def _reopen_clip(
    name: str, frames_path: str, face: np.ndarray, shoulders: np.ndarray
) -> PreparedClip:
    return PreparedClip(name, np.load(frames_path, mmap_mode="r"), face, shoulders)


def crop_and_track(
    clip: Path, size: int, fps: float, cache_dir: Path, max_frames: int | None = None
) -> tuple[np.ndarray, LandmarkTrack]:
    """(T, S, S, 3) uint8 fixed crops of `clip` (memory-mapped) and the landmarks the sender
    detects on them; computed once, then read from `cache_dir`. T = 0 when no face shows in
    the clip's first second (no crop can be fixed)."""
    digest = clip_cache_key(clip, size, fps, max_frames, _CACHE_VERSION)
    frames_path = cache_dir / f"{clip.stem}-{digest}.npy"
    track_path = cache_dir / f"{clip.stem}-{digest}.npz"
    if not (frames_path.exists() and track_path.exists()):
        reference = load_reference_clip(clip, size, fps, max_frames=max_frames)
        if reference is None:
            frames = np.zeros((0, size, size, 3), dtype=np.uint8)
            empty = np.zeros((0, 0, 3), dtype=np.float32)
            track = LandmarkTrack(clip.name, fps, size, empty, np.zeros((0, 2, 2), np.float32))
        else:
            frames = reference.frames
            track = track_frames(clip.name, frames, fps, size, crop=False)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_track(track, track_path)
        temporary = frames_path.with_suffix(".tmp.npy")
        np.save(temporary, frames)
        temporary.replace(frames_path)  # the .npy's presence marks a finished clip
    return np.load(frames_path, mmap_mode="r"), read_track(track_path, clip.name, fps, size)


def decode_landmarks(
    track: LandmarkTrack, config: EncoderConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 3) face and (T, 2, 2) shoulders that the receiver decodes for each frame of the
    track (NaN where no face was found), under the stream settings of `config`.

    Each frame's landmarks go through the sender's own fit, quantiser and keypoint coder
    (StreamEncoder.coded_keypoints: the rate-distortion quantiser depends on the frames
    coded before), as on a lossless link; frames without a face are not coded.
    """
    from talkcodec.codec import StreamEncoder

    config = config or EncoderConfig(lowres_px=0)
    encoder = StreamEncoder(config, detector=ReplayDetector([]))
    num_points = encoder.model.num_points
    face = np.full((len(track.face), num_points, 3), np.nan, dtype=np.float32)
    shoulders = np.full((len(track.face), 2, 2), np.nan, dtype=np.float32)
    scale = config.size_px / track.size
    for index in np.flatnonzero(track.found):
        sent = Landmarks(face=track.face[index] * scale, shoulders=track.shoulders[index] * scale)
        decoded = encoder.coded_keypoints(sent).decoded
        face[index], shoulders[index] = decoded.face / scale, decoded.shoulders / scale
    return face, shoulders


def load_clips(
    clips: Sequence[Path],
    size: int = 256,
    fps: float = 25.0,
    cache_dir: Path | None = None,
    max_frames: int | None = None,
    encoder_config: EncoderConfig | None = None,
) -> list[PreparedClip]:
    """Every clip with at least two usable frames, prepared (the first time) and decoded."""
    cache_dir = cache_dir or default_cache_dir()
    prepared = []
    for clip in tqdm(clips, desc="refiner data", unit="clip"):
        frames, track = crop_and_track(clip, size, fps, cache_dir, max_frames)
        if len(frames) == 0:
            logger.warning("%s: no face in its first second, left out", clip.name)
            continue
        face, shoulders = decode_landmarks(track, encoder_config)
        item = PreparedClip(clip.name, frames, face, shoulders)
        if len(item.usable) < 2:
            logger.warning("%s: %d frames with a face, left out", clip.name, len(item.usable))
            continue
        prepared.append(item)
    if not prepared:
        raise ValueError(f"none of {len(clips)} clips has two frames with a face")
    return prepared


def person_weights(clips: Sequence[Path]) -> list[float]:
    """A weight per clip so that every person is drawn equally often: 1 / (that person's clip
    count), people from MANIFEST.tsv beside the clips' folder (see ../shared/data/README.md).
    A clip the manifest does not list (or no manifest) counts as a person of its own."""
    people: dict[str, str] = {}
    for manifest in {clip.resolve().parent.parent / "MANIFEST.tsv" for clip in clips}:
        if manifest.is_file():
            with manifest.open() as rows:
                for row in csv.DictReader(rows, delimiter="\t"):
                    people[Path(row["file"]).name] = row["person_id"]
    person = [people.get(clip.name, clip.name) for clip in clips]
    counts = Counter(person)
    return [1 / counts[name] for name in person]


@dataclass(frozen=True)
class PairSpec:
    """What one sample is: which frames, and how it is augmented (drawn from its index)."""

    clip: int
    reference: int
    driving: int
    flip: bool
    gain: np.ndarray  # (3,) per-channel colour gain
    offset: np.ndarray  # (3,) per-channel colour offset


class ReenactmentPairs(Dataset[dict[str, torch.Tensor]]):
    """Self-reenactment samples, a pure function of (seed, index): index i shares its reference
    with the other indices of its group i // drivers_per_reference, so the warp prepares each
    reference once per group when read in order (keep the batch size a multiple of it).

    An item is a dict of float32 tensors: reference (3, S, S) in [0, 1], the reference as the
    receiver holds it; target (3, h, w) the driving frame; grid (h, w, 2) the warp's sampling
    positions, normalised (align_corners=True); guide (GUIDE_CHANNELS, h, w). h = w = S, or
    crop_px: a window of the output around the driving face (the grid still addresses the
    whole reference, so cropping the output loses nothing).
    Augmentation: a horizontal flip of everything, and one colour gain and offset per channel
    applied to reference and target alike. Clips are drawn in proportion to clip_weights
    (default: uniformly), then both frames uniformly within the clip.
    """

    def __init__(
        self,
        clips: Sequence[PreparedClip],
        warp: str,
        seed: int = 0,
        drivers_per_reference: int = 4,
        crop_px: int | None = None,
        augment: bool = True,
        color_jitter: float = 0.05,
        reference_codec: str = "webp",  # what refiner-v1 was trained on
        clip_weights: Sequence[float] | None = None,
    ) -> None:
        if not clips:
            raise ValueError("no clips to draw pairs from")
        size = clips[0].frames.shape[1]
        if crop_px is not None and not 0 < crop_px <= size:
            raise ValueError(f"crop_px must be in 1..{size}, got {crop_px}")
        self.clips = list(clips)
        self.warp = warp
        self.seed = seed
        self.drivers_per_reference = drivers_per_reference
        self.crop_px = crop_px
        self.augment = augment
        self.color_jitter = color_jitter
        self.reference_codec = reference_codec
        weights = np.ones(len(self.clips)) if clip_weights is None else np.array(clip_weights)
        if weights.shape != (len(self.clips),) or not np.all(weights > 0):
            raise ValueError(f"need {len(self.clips)} positive clip weights, got {clip_weights}")
        self._clip_probability = weights / weights.sum()
        self._usable = [clip.usable for clip in self.clips]
        self._renderer: Renderer | None = None
        self._codec: KeyframeCodec | None = None
        self._reference_key: tuple[int, int] | None = None
        self._reference_image: np.ndarray | None = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)  # a worker process builds its own renderer
        state.update(_renderer=None, _codec=None, _reference_key=None, _reference_image=None)
        return state

    def spec(self, index: int) -> PairSpec:
        group = np.random.default_rng([self.seed, index // self.drivers_per_reference, 0])
        clip = int(group.choice(len(self.clips), p=self._clip_probability))
        usable = self._usable[clip]
        sample = np.random.default_rng([self.seed, index, 1])
        reference = int(usable[group.integers(len(usable))])
        driving = int(usable[sample.integers(len(usable))])
        jitter = self.color_jitter if self.augment else 0.0
        return PairSpec(
            clip=clip,
            reference=reference,
            driving=driving,
            flip=self.augment and bool(sample.integers(2)),
            gain=1 + jitter * sample.uniform(-1, 1, 3),
            offset=jitter * sample.uniform(-1, 1, 3),
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        spec = self.spec(index)
        clip = self.clips[spec.clip]
        reference = self._prepare_reference(spec.clip, spec.reference)
        driving = clip.landmarks(spec.driving)
        source_xy = self._renderer_flow(driving)  # (S, S, 2) pixels
        size = source_xy.shape[0]
        guide = torch.from_numpy(draw_guide(driving, source_xy))  # (G, S, S)
        grid = torch.from_numpy(normalised_grid(source_xy)[0])
        reference_image = _to_tensor(reference)
        target = _to_tensor(clip.frames[spec.driving])
        centre_x, centre_y = driving.face[:, :2].mean(axis=0)
        if spec.flip:
            reference_image, target, guide = (t.flip(-1) for t in (reference_image, target, guide))
            grid = grid.flip(1) * torch.tensor([-1.0, 1.0])
            centre_x = size - 1 - centre_x
        gain = torch.from_numpy(spec.gain).float().view(3, 1, 1)
        offset = torch.from_numpy(spec.offset).float().view(3, 1, 1)
        reference_image = (reference_image * gain + offset).clamp(0, 1)
        target = (target * gain + offset).clamp(0, 1)
        if self.crop_px is not None and self.crop_px < size:
            top, left = self._window(index, centre_x, centre_y, size)
            rows, columns = slice(top, top + self.crop_px), slice(left, left + self.crop_px)
            target, guide = target[:, rows, columns], guide[:, rows, columns]
            grid = grid[rows, columns]
        return {
            "reference": reference_image.contiguous(),
            "target": target.contiguous(),
            "grid": grid.contiguous(),
            "guide": guide.contiguous(),
        }

    def _window(self, index: int, centre_x: float, centre_y: float, size: int) -> tuple[int, int]:
        """(top, left) of a crop_px window that holds the face centre in its middle half."""
        assert self.crop_px is not None
        rng = np.random.default_rng([self.seed, index, 2])
        quarter = self.crop_px / 4
        corner = []
        for centre in (centre_y, centre_x):
            low, high = centre - 3 * quarter, centre - quarter
            start = rng.uniform(low, high) if self.augment else (low + high) / 2
            corner.append(int(np.clip(round(start), 0, size - self.crop_px)))
        return corner[0], corner[1]

    def _prepare_reference(self, clip_index: int, frame: int) -> np.ndarray:
        """The reference as the receiver holds it ((S, S, 3) uint8), given to the warp once per
        run of samples that share it."""
        key = (clip_index, frame)
        if key != self._reference_key or self._reference_image is None:
            if self._renderer is None:
                self._renderer = make_warp(self.warp)
            image = np.ascontiguousarray(self.clips[clip_index].frames[frame])
            if self.reference_codec != NO_CODEC:
                if self._codec is None:
                    self._codec = make_keyframe_codec(self.reference_codec)
                image = self._codec.decompress(self._codec.compress(image))
            self._renderer.set_reference(image, self.clips[clip_index].landmarks(frame))
            self._reference_key, self._reference_image = key, image
        return self._reference_image

    def _renderer_flow(self, landmarks: Landmarks) -> np.ndarray:
        assert self._renderer is not None
        return np.asarray(self._renderer.flow(landmarks), dtype=np.float32)  # type: ignore[attr-defined]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 (a copy is taken: frames may be read-only memory maps) -> (3, H, W)
    float32 in [0, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
