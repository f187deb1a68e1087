"""talkcodec.generator.data: the refiner's self-reenactment pairs on synthetic clips, the decoded
keypoints against the stream's own coder, and (marked `data`) a real clip."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from talkcodec.config import EncoderConfig
from talkcodec.entropy.keypoints import KeypointDecoder, KeypointEncoder
from talkcodec.generator.data import (
    NO_CODEC,
    PreparedClip,
    ReenactmentPairs,
    decode_landmarks,
    load_clips,
    make_warp,
    person_weights,
)
from talkcodec.generator.refiner import GUIDE_CHANNELS, sample
from talkcodec.keypoints.dataset import LandmarkTrack
from talkcodec.keypoints.registry import keypoint_model_id, load_keypoint_model

SIZE = 64
NUM_POINTS = 478


def synthetic_clip(frames: int = 6, seed: int = 0) -> PreparedClip:
    """A textured image whose 478-point 'face' (an ellipse of points) drifts and grows."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (SIZE // 4, SIZE // 4, 3)).astype(np.float32)
    image = np.kron(coarse, np.ones((4, 4, 1))).astype(np.uint8)  # (SIZE, SIZE, 3)
    angle = rng.uniform(0, 2 * np.pi, NUM_POINTS)
    radius = np.sqrt(rng.uniform(0, 1, NUM_POINTS))
    unit = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    faces = []
    for t in range(frames):
        xy = np.array([30.0 + t, 31.0]) + (12.0 + 0.5 * t) * unit
        faces.append(np.concatenate([xy, 5 * radius[:, None] ** 2], axis=1))
    shoulders = np.full((frames, 2, 2), -50.0, dtype=np.float32)
    face = np.array(faces, dtype=np.float32)
    face[2] = np.nan  # a frame where the sender found no face
    return PreparedClip("synthetic.mp4", np.repeat(image[None], frames, 0), face, shoulders)


def pairs(**options: object) -> ReenactmentPairs:
    settings: dict[str, object] = {"warp": "meshwarp", "reference_codec": NO_CODEC, **options}
    return ReenactmentPairs([synthetic_clip(), synthetic_clip(seed=1)], **settings)  # type: ignore[arg-type]


def test_items_have_the_refiners_shapes_and_skip_faceless_frames() -> None:
    dataset = pairs(augment=False)
    for index in range(8):
        spec = dataset.spec(index)
        assert 2 not in (spec.reference, spec.driving)
        item = dataset[index]
        assert item["reference"].shape == item["target"].shape == (3, SIZE, SIZE)
        assert item["grid"].shape == (SIZE, SIZE, 2)
        assert item["guide"].shape == (GUIDE_CHANNELS, SIZE, SIZE)
        assert item["target"].min() >= 0 and item["target"].max() <= 1
        frame = dataset.clips[spec.clip].frames[spec.driving]
        assert torch.equal(item["target"], torch.from_numpy(frame).permute(2, 0, 1) / 255)


def test_groups_share_a_reference_and_items_repeat() -> None:
    dataset = pairs(drivers_per_reference=4)
    specs = [dataset.spec(index) for index in range(8)]
    assert len({(s.clip, s.reference) for s in specs[:4]}) == 1
    assert len({(s.clip, s.reference) for s in specs[4:]}) == 1
    again = pairs(drivers_per_reference=4)[5]
    for key, value in dataset[5].items():
        assert torch.equal(value, again[key]), key


def test_flip_and_colour_jitter_apply_alike_to_everything() -> None:
    plain = pairs(augment=False)
    augmented = pairs(augment=True, color_jitter=0.1)
    flips = 0
    for index in range(12):
        spec = augmented.spec(index)
        original, item = plain[index], augmented[index]
        assert (plain.spec(index).reference, plain.spec(index).driving) == (
            spec.reference,
            spec.driving,
        )
        gain = torch.from_numpy(spec.gain).float().view(3, 1, 1)
        offset = torch.from_numpy(spec.offset).float().view(3, 1, 1)
        expected = {key: original[key] for key in original}
        if spec.flip:
            flips += 1
            for key in ("reference", "target", "guide"):
                expected[key] = expected[key].flip(-1)
            expected["grid"] = expected["grid"].flip(1) * torch.tensor([-1.0, 1.0])
        for key in ("reference", "target"):
            expected[key] = (expected[key] * gain + offset).clamp(0, 1)
            torch.testing.assert_close(item[key], expected[key])
        torch.testing.assert_close(item["guide"], expected["guide"])
        torch.testing.assert_close(item["grid"], expected["grid"])
        # The flipped warp is the warp flipped.
        jittered = (original["reference"] * gain + offset).clamp(0, 1)
        warped = sample(jittered[None], original["grid"][None])[0]
        if spec.flip:
            warped = warped.flip(-1)
        augmented_warp = sample(item["reference"][None], item["grid"][None])[0]
        torch.testing.assert_close(augmented_warp, warped, atol=1e-4, rtol=0)
    assert 0 < flips < 12


def test_a_window_is_cut_consistently_from_target_grid_and_guide() -> None:
    full = pairs(augment=False)
    cropped = pairs(augment=False, crop_px=32)
    for index in range(4):
        whole, window = full[index], cropped[index]
        assert window["target"].shape == (3, 32, 32) and window["grid"].shape == (32, 32, 2)
        assert window["reference"].shape == (3, SIZE, SIZE)
        matches = [
            (top, left)
            for top in range(SIZE - 31)
            for left in range(SIZE - 31)
            if torch.equal(whole["grid"][top : top + 32, left : left + 32], window["grid"])
        ]
        assert matches, "the window's grid is not a window of the whole grid"
        top, left = matches[0]
        rows, columns = slice(top, top + 32), slice(left, left + 32)
        assert torch.equal(whole["target"][:, rows, columns], window["target"])
        assert torch.equal(whole["guide"][:, rows, columns], window["guide"])


def test_pairs_travel_to_worker_processes_without_copying_cached_frames(tmp_path: Path) -> None:
    clip = synthetic_clip()
    np.save(tmp_path / "frames.npy", clip.frames)
    cached = PreparedClip(
        clip.name, np.load(tmp_path / "frames.npy", mmap_mode="r"), clip.face, clip.shoulders
    )
    dataset = ReenactmentPairs([cached], "meshwarp", reference_codec=NO_CODEC)
    expected = dataset[3]  # the main process has a renderer now; a worker builds its own
    payload = pickle.dumps(dataset)
    assert len(payload) < cached.frames.nbytes / 2
    copy = pickle.loads(payload)
    assert isinstance(copy.clips[0].frames, np.memmap)
    for key, value in copy[3].items():
        assert torch.equal(value, expected[key]), key


def test_clip_weights_steer_the_draw() -> None:
    dataset = pairs(clip_weights=[1.0, 1e-9], drivers_per_reference=1)
    assert {dataset.spec(index).clip for index in range(20)} == {0}
    with pytest.raises(ValueError, match="need 2 positive clip weights"):
        pairs(clip_weights=[1.0])


def test_person_weights_balance_people(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    clips = [folder / name for name in ("a1.mp4", "a2.mp4", "b.mp4", "unlisted.mp4")]
    (tmp_path / "MANIFEST.tsv").write_text(
        "split\tfile\tperson_id\n"
        "train\ttrain/a1.mp4\tA\ntrain\ttrain/a2.mp4\tA\ntrain\ttrain/b.mp4\tB\n"
    )
    assert person_weights(clips) == [0.5, 0.5, 1.0, 1.0]


def test_decoded_landmarks_are_what_the_stream_decodes() -> None:
    config = EncoderConfig()
    model = load_keypoint_model(
        keypoint_model_id(config.detector, config.keypoint_coder)
    ).truncated(config.expression_dims)
    rng = np.random.default_rng(0)
    params = model.param_mean + 0.5 * model.param_std * rng.standard_normal((5, model.num_params))
    sent = [model.reconstruct(p, config.size_px) for p in params]
    face = np.stack([landmarks.face for landmarks in sent])
    face[1] = np.nan
    shoulders = np.stack([landmarks.shoulders for landmarks in sent])
    track = LandmarkTrack("synthetic", config.fps, config.size_px, face, shoulders)
    decoded_face, decoded_shoulders = decode_landmarks(track, config)
    assert np.isnan(decoded_face[1]).all()

    step_px = round(config.keypoint_step_px * 1000) / 1000
    encoder = KeypointEncoder(
        model, step_px, config.refresh_interval_frames, config.keypoint_rdo_lambda_px2
    )
    decoder = KeypointDecoder(model, step_px)
    for index in (0, 2, 3, 4):  # intra first, then predicted packets
        coded = encoder.encode(model.fit(sent[index], config.size_px))
        received = model.reconstruct(decoder.decode(coded.payload, coded.intra), config.size_px)
        np.testing.assert_array_equal(decoded_face[index], received.face)
        np.testing.assert_array_equal(decoded_shoulders[index], received.shoulders)


def test_unknown_warp_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown renderer 'nope'"):
        make_warp("nope")


@pytest.mark.data
def test_real_clip_pairs(dev_clip: Path, tmp_path: Path) -> None:
    """A real clip end to end: fixed crops, detected and decoded landmarks, meshwarp pairs."""
    (clip,) = load_clips([dev_clip], max_frames=25, cache_dir=tmp_path)
    assert clip.frames.shape == (25, 256, 256, 3)
    assert len(clip.usable) >= 20
    assert list(tmp_path.glob("*.npy")), "crops are cached"
    dataset = ReenactmentPairs([clip], "meshwarp", augment=False, drivers_per_reference=1)
    for index in range(3):
        item = dataset[index]
        warped = sample(item["reference"][None], item["grid"][None])[0]
        mse = torch.mean((warped - item["target"]) ** 2).item()
        assert 10 * np.log10(1 / mse) > 18  # a talking head within one second
        assert item["guide"][1:].amax() == 1  # mouth and eyes are drawn
