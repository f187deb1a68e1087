"""Detector registry and the optional face-alignment backend's clear errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from talkcodec.keypoints.base import DetectorUnavailable, shoulders_from_face
from talkcodec.keypoints.detectors import make_detector


def test_unknown_detector_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown detector 'dlib'; choose one of mediapipe, face-alignment"
    ):
        make_detector("dlib")


def test_face_alignment_missing_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(DetectorUnavailable, match=r"pip install 'talkcodec\[fan\]'"):
        make_detector("face-alignment")


def _fake_face_alignment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for the face_alignment package with its real URL tables' shape."""
    package = types.ModuleType("face_alignment")
    package.__version__ = "1.4.1"  # type: ignore[attr-defined]
    api = types.ModuleType("face_alignment.api")
    api.models_urls = {  # type: ignore[attr-defined]
        "1.6": {
            "3DFAN-4": "https://example.invalid/python-fan/3DFAN4_1.6-ec5cf40a1d.zip",
            "depth": "https://example.invalid/python-fan/depth_1.6-2aa3f18772.zip",
        }
    }
    api.default_model_urls = {  # type: ignore[attr-defined]
        "3DFAN-4": "https://example.invalid/python-fan/3DFAN4-4a694010b9.zip",
        "depth": "https://example.invalid/python-fan/depth-6c4283c0e0.zip",
    }
    sfd = types.ModuleType("face_alignment.detection.sfd.sfd_detector")
    sfd.models_urls = {"s3fd": "https://example.invalid/python-fan/s3fd-619a316812.pth"}  # type: ignore[attr-defined]
    package.api = api  # type: ignore[attr-defined]
    for name, module in {
        "face_alignment": package,
        "face_alignment.api": api,
        "face_alignment.detection": types.ModuleType("face_alignment.detection"),
        "face_alignment.detection.sfd": types.ModuleType("face_alignment.detection.sfd"),
        "face_alignment.detection.sfd.sfd_detector": sfd,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_face_alignment_missing_weights_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_face_alignment(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "s3fd-619a316812.pth").write_bytes(b"x")
    with pytest.raises(DetectorUnavailable) as error:
        make_detector("face-alignment")
    message = str(error.value)
    # torch 2.13 has no entry of its own in face-alignment's table: the default files are used.
    assert "3DFAN4-4a694010b9.zip, depth-6c4283c0e0.zip" in message
    assert "s3fd" not in message
    assert str(tmp_path / "hub" / "checkpoints") in message


def test_shoulders_from_face_lie_below_and_outside_the_face() -> None:
    face = np.array([[100, 100, 0], [160, 100, 0], [130, 180, 0]], dtype=np.float32)
    shoulders = shoulders_from_face(face)
    assert shoulders.shape == (2, 2)
    assert shoulders[0, 0] > 160 and shoulders[1, 0] < 100  # person's left is on image right
    assert (shoulders[:, 1] > 180).all()
