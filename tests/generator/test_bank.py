"""talkcodec.bank: the face descriptor, the selection rule, the bank and its use by
renderers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from talkcodec.bank import (
    DESCRIPTOR_DECIMALS,
    DESCRIPTOR_NAMES,
    DESCRIPTOR_SCALES,
    DESCRIPTOR_SIZE,
    FACE_LAYOUTS,
    BankMirror,
    ReferenceBank,
    describe,
    descriptor_distance,
    select_reference,
)
from talkcodec.bitstream import KeypointModelId
from talkcodec.generator import make_renderer
from talkcodec.generator.meshwarp import MeshWarpRenderer
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.registry import load_keypoint_model

SIZE = 256
MODEL_FOR_POINTS = {478: KeypointModelId.MEDIAPIPE_478_V2, 68: KeypointModelId.FAN_68_V2}
ENTRY = {name: index for index, name in enumerate(DESCRIPTOR_NAMES)}


def average_face(num_points: int) -> Landmarks:
    """The shipped model's average face in a 256x256 crop (a real face layout, pixel units)."""
    model = load_keypoint_model(MODEL_FOR_POINTS[num_points])
    return model.reconstruct(model.param_mean, SIZE)


def with_face(landmarks: Landmarks, face: np.ndarray) -> Landmarks:
    return Landmarks(face=face.astype(np.float32), shoulders=landmarks.shoulders)


def open_mouth(landmarks: Landmarks, pixels: float) -> Landmarks:
    """The lower inner lip moved down by `pixels`."""
    face = landmarks.face.copy()
    lower = [lower for _, lower in FACE_LAYOUTS[landmarks.num_face_points].inner_lip_pairs]
    face[lower, 1] += pixels
    return with_face(landmarks, face)


def close_right_eye(landmarks: Landmarks) -> Landmarks:
    face = landmarks.face.copy()
    for upper, lower in FACE_LAYOUTS[landmarks.num_face_points].right_eye_pairs:
        face[upper] = face[lower]
    return with_face(landmarks, face)


def rotated(landmarks: Landmarks, axis: str, degrees: float) -> Landmarks:
    """The face turned about its centre: "y" (vertical, a head turn) or "z" (in-plane)."""
    rotation_vector = np.zeros(3)
    rotation_vector["xyz".index(axis)] = math.radians(degrees)
    rotation = cv2.Rodrigues(rotation_vector)[0]
    face = landmarks.face.astype(np.float64)
    centre = face.mean(axis=0)
    return with_face(landmarks, (face - centre) @ rotation.T + centre)


def descriptor_of(landmarks: Landmarks) -> np.ndarray:
    """The descriptor of landmarks in a SIZE x SIZE image."""
    return describe(landmarks, (SIZE, SIZE))


def change(before: Landmarks, after: Landmarks) -> dict[str, float]:
    difference = descriptor_of(after) - descriptor_of(before)
    return {name: float(difference[index]) for name, index in ENTRY.items()}


# -- the descriptor ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_points", [68, 478])
def test_descriptor_is_rounded_float64(num_points: int) -> None:
    descriptor = descriptor_of(average_face(num_points))
    assert descriptor.shape == (DESCRIPTOR_SIZE,) and descriptor.dtype == np.float64
    assert np.array_equal(descriptor, np.round(descriptor, DESCRIPTOR_DECIMALS))


def test_both_layouts_describe_the_average_face_alike() -> None:
    assert np.abs(descriptor_of(average_face(68)) - descriptor_of(average_face(478))).max() < 1e-3


@pytest.mark.parametrize("num_points", [68, 478])
def test_descriptor_sees_the_mouth_open(num_points: int) -> None:
    face = average_face(num_points)
    delta = change(face, open_mouth(face, 8.0))
    span = np.linalg.norm(np.subtract(*face.face[list(FACE_LAYOUTS[num_points].eye_outer_corners)]))
    assert delta["mouth_open"] == pytest.approx(8.0 / span, rel=0.1)
    assert all(abs(value) < 1e-6 for name, value in delta.items() if name != "mouth_open")


@pytest.mark.parametrize("num_points", [68, 478])
def test_descriptor_sees_an_eye_close(num_points: int) -> None:
    face = average_face(num_points)
    closed = descriptor_of(close_right_eye(face))
    assert closed[ENTRY["right_eye_open"]] == 0.0
    assert closed[ENTRY["left_eye_open"]] == descriptor_of(face)[ENTRY["left_eye_open"]]


@pytest.mark.parametrize("num_points", [68, 478])
def test_descriptor_sees_a_head_turn(num_points: int) -> None:
    face = average_face(num_points)
    turn = change(face, rotated(face, "y", 20.0))
    assert abs(turn["yaw_rad"]) == pytest.approx(math.radians(20.0), rel=0.15)
    assert abs(turn["roll_rad"]) < math.radians(3.0)
    assert all(abs(turn[name]) < 0.01 for name in ("mouth_open", "right_eye_open"))
    tilt = change(face, rotated(face, "z", 15.0))
    assert tilt["roll_rad"] == pytest.approx(math.radians(15.0), abs=1e-4)
    assert abs(tilt["yaw_rad"]) < 1e-4 and abs(tilt["pitch_rad"]) < 1e-4


def test_descriptor_sees_head_position_and_size_but_keeps_expression() -> None:
    face = average_face(478)
    points = face.face.astype(np.float64)
    centre = points[:, :2].mean(axis=0)
    shifted = with_face(face, points + [16.0, -8.0, 5.0])
    delta = change(face, shifted)
    assert delta["centre_x"] == pytest.approx(16 / SIZE, abs=1e-6)
    assert delta["centre_y"] == pytest.approx(-8 / SIZE, abs=1e-6)
    assert all(abs(value) < 1e-5 for name, value in delta.items() if "centre" not in name)
    zoomed = points.copy()
    zoomed[:, :2] = (points[:, :2] - centre) * 1.25 + centre
    zoomed[:, 2] *= 1.25
    delta = change(face, with_face(face, zoomed))
    assert delta["log_size"] == pytest.approx(math.log(1.25), abs=1e-5)
    expression = ("mouth_open", "mouth_width", "right_eye_open", "yaw_rad", "roll_rad")
    assert all(abs(delta[name]) < 1e-5 for name in expression)
    assert descriptor_distance(descriptor_of(face), descriptor_of(shifted)) == pytest.approx(
        math.hypot(1.0, 0.5), abs=1e-4
    )


def test_unknown_layout_or_collapsed_face_gives_zeros() -> None:
    face = average_face(478)
    other = Landmarks(face=face.face[:100], shoulders=face.shoulders)
    assert not descriptor_of(other).any()
    collapsed = with_face(face, np.zeros_like(face.face))
    assert not descriptor_of(collapsed).any()


# -- distance and selection -------------------------------------------------------------------


def test_one_scale_of_change_is_one_unit_of_distance() -> None:
    zero = np.zeros(DESCRIPTOR_SIZE)
    for index, scale in enumerate(DESCRIPTOR_SCALES):
        unit = zero.copy()
        unit[index] = scale
        assert descriptor_distance(zero, unit) == pytest.approx(1.0)
    both = np.array(DESCRIPTOR_SCALES) * ([3, 4] + [0] * (DESCRIPTOR_SIZE - 2))
    assert descriptor_distance(zero, both) == pytest.approx(5.0)


def test_selection_picks_the_nearest_and_breaks_ties_by_lowest_id() -> None:
    face = average_face(478)
    bank = {
        0: descriptor_of(face),
        2: descriptor_of(open_mouth(face, 12.0)),
        1: descriptor_of(face),
    }
    assert select_reference(bank, descriptor_of(open_mouth(face, 10.0))) == 2
    assert select_reference(bank, descriptor_of(open_mouth(face, 1.0))) == 0  # 0 and 1 tie
    assert select_reference({3: bank[0], 1: bank[0]}, bank[0]) == 1
    with pytest.raises(ValueError, match="^cannot select a reference from an empty bank$"):
        select_reference({}, bank[0])


def test_selection_is_deterministic_over_many_faces() -> None:
    rng = np.random.default_rng(0)
    bank = {slot: np.round(rng.normal(0, 0.1, DESCRIPTOR_SIZE), 6) for slot in range(4)}
    queries = np.round(rng.normal(0, 0.1, (200, DESCRIPTOR_SIZE)), 6)
    first = [select_reference(bank, query) for query in queries]
    reordered = dict(reversed(list(bank.items())))
    assert [select_reference(reordered, query) for query in queries] == first
    assert len(set(first)) == 4


# -- the bank and the sender's mirror ---------------------------------------------------------


def test_slot_zero_empties_the_bank() -> None:
    bank: ReferenceBank[str] = ReferenceBank(3)
    zero = np.zeros(DESCRIPTOR_SIZE)
    bank.store(0, zero, "a")
    bank.store(2, zero + 1, "b")
    assert len(bank) == 2 and bank.select(zero + 1) == 2
    bank.store(0, zero + 1, "c")
    assert len(bank) == 1 and 2 not in bank and bank.item(0) == "c"


def test_bank_rejects_ids_outside_it() -> None:
    bank: ReferenceBank[None] = ReferenceBank(2)
    with pytest.raises(ValueError, match=r"^reference id must be in 0..1 \(bank of 2\), got 2$"):
        bank.store(2, np.zeros(DESCRIPTOR_SIZE), None)
    with pytest.raises(ValueError, match="^bank size must be in 1..255, got 0$"):
        ReferenceBank(0)


def test_mirror_fills_free_slots_then_replaces_the_least_recently_used() -> None:
    mirror = BankMirror(3)
    descriptors = [np.full(DESCRIPTOR_SIZE, value) for value in (0.0, 1.0, 2.0)]
    mirror.store(0, descriptors[0], frame_index=0)
    assert mirror.slot_for_new_reference() == 1
    mirror.store(1, descriptors[1], frame_index=1)
    mirror.store(2, descriptors[2], frame_index=2)
    assert mirror.select(descriptors[1], frame_index=3) == 1  # slot 2 is now the oldest
    assert mirror.slot_for_new_reference() == 2
    mirror.select(descriptors[2], frame_index=4)
    assert mirror.slot_for_new_reference() == 1
    mirror.store(0, descriptors[0], frame_index=5)
    assert len(mirror.bank) == 1 and mirror.slot_for_new_reference() == 1
    with pytest.raises(ValueError, match="no slot for an extra reference"):
        BankMirror(1).slot_for_new_reference()


# -- renderers with a bank --------------------------------------------------------------------


class CountingRenderer(MeshWarpRenderer):
    """A mesh warp that counts how often it prepares a reference."""

    def __init__(self, bank_size: int = 4) -> None:
        super().__init__(bank_size)
        self.prepared = 0

    def prepare_reference(self, image, landmarks):  # type: ignore[no-untyped-def]
        self.prepared += 1
        return super().prepare_reference(image, landmarks)


def flat_image(value: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), value, dtype=np.uint8)


def test_renderer_prepares_each_reference_once_and_renders_from_the_nearest() -> None:
    face = average_face(478)
    mouth = open_mouth(face, 12.0)
    renderer = CountingRenderer()
    renderer.set_reference(flat_image(10), face, 0)
    renderer.set_reference(flat_image(200), mouth, 1)
    assert renderer.selected_reference_id is None
    for _ in range(3):
        assert renderer.render(open_mouth(face, 11.0))[128, 128, 0] == 200
        assert renderer.selected_reference_id == 1
        assert renderer.render(face)[128, 128, 0] == 10
        assert renderer.selected_reference_id == 0
    assert renderer.prepared == 2
    assert np.array_equal(renderer.flow(mouth), renderer.flow(face))  # own mesh, own landmarks


def test_renderer_slot_zero_clears_the_bank() -> None:
    face = average_face(478)
    renderer = CountingRenderer()
    renderer.set_reference(flat_image(10), face, 0)
    renderer.set_reference(flat_image(200), open_mouth(face, 12.0), 3)
    renderer.render(open_mouth(face, 12.0))
    renderer.set_reference(flat_image(50), face, 0)
    assert renderer.selected_reference_id is None
    assert renderer.render(open_mouth(face, 12.0))[128, 128, 0] == 50
    assert renderer.selected_reference_id == 0


def test_renderer_rejects_an_id_outside_its_bank_and_keeps_its_references() -> None:
    face = average_face(478)
    renderer = CountingRenderer(bank_size=2)
    with pytest.raises(RuntimeError, match="^meshwarp renderer has no reference yet"):
        renderer.render(face)
    renderer.set_reference(flat_image(10), face, 0)
    with pytest.raises(ValueError, match="got 2$"):
        renderer.set_reference(flat_image(200), face, 2)
    with pytest.raises(ValueError, match="reference must be"):
        renderer.set_reference(np.zeros((SIZE, SIZE), np.uint8), face, 0)
    assert renderer.prepared == 1 + 1  # the bad image was tried, the bad id never
    assert renderer.render(face)[128, 128, 0] == 10


def test_make_renderer_sizes_the_bank() -> None:
    assert make_renderer("meshwarp").bank_size == 4
    assert make_renderer("meshwarp", bank_size=1).bank_size == 1
