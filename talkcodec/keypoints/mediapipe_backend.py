"""mediapipe face mesh (478 3D points with refined eyes and irises) plus pose for the shoulders."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from talkcodec.keypoints.base import DetectorUnavailable, LandmarkDetector, shoulders_from_face
from talkcodec.keypoints.landmarks import Landmarks

logger = logging.getLogger(__name__)

# Pose landmark indices of the shoulders in mediapipe's 33-point body model.
_LEFT_SHOULDER, _RIGHT_SHOULDER = 11, 12
_MIN_SHOULDER_VISIBILITY = 0.3


class MediapipeDetector(LandmarkDetector):
    """Face mesh on every frame; the pose model (about 27 ms) on every `pose_every_n_frames`-th.

    Shoulders move slowly, so between pose runs the last shoulder positions are kept. The pose
    model shipped in the mediapipe 0.10.21 wheel is the 'full' one (model_complexity=1); the lite
    and heavy ones would be downloaded at run time, which is not possible here.
    """

    name = "mediapipe"
    num_face_points = 478

    def __init__(self, *, pose_every_n_frames: int = 4, static_images: bool = False) -> None:
        if pose_every_n_frames < 0:
            raise ValueError(f"pose_every_n_frames must be >= 0, got {pose_every_n_frames}")
        try:
            from mediapipe.python.solutions import face_mesh, pose
        except ImportError as error:
            raise DetectorUnavailable(
                "the mediapipe backend needs mediapipe==0.10.21: pip install mediapipe==0.10.21"
            ) from error
        self._face_mesh = face_mesh.FaceMesh(
            static_image_mode=static_images,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )
        self._pose: Any = None
        if pose_every_n_frames > 0:
            self._pose = pose.Pose(static_image_mode=static_images, model_complexity=1)
        self._pose_every_n_frames = pose_every_n_frames
        self._frame_index = 0
        self._last_shoulders: np.ndarray | None = None

    def detect(self, image: np.ndarray) -> Landmarks | None:
        height, width = image.shape[:2]
        image = np.ascontiguousarray(image)
        result = self._face_mesh.process(image)
        frame_index = self._frame_index
        self._frame_index += 1
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        face = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)  # (478, 3)
        # mediapipe normalises x by width and y by height (pixel i spans [i, i+1)); z is on the
        # scale of x. talkcodec puts pixel i's centre at i, as OpenCV's warps do.
        face *= np.array([width, height, width], dtype=np.float32)
        face[:, :2] -= 0.5
        if self._pose is not None and frame_index % self._pose_every_n_frames == 0:
            detected = self._detect_shoulders(image)
            if detected is not None:
                self._last_shoulders = detected
        shoulders = self._last_shoulders
        if shoulders is None:
            shoulders = shoulders_from_face(face)
        return Landmarks(face=face, shoulders=shoulders.copy())

    def _detect_shoulders(self, image: np.ndarray) -> np.ndarray | None:
        result = self._pose.process(image)
        if result.pose_landmarks is None:
            return None
        marks = result.pose_landmarks.landmark
        left, right = marks[_LEFT_SHOULDER], marks[_RIGHT_SHOULDER]
        if min(left.visibility, right.visibility) < _MIN_SHOULDER_VISIBILITY:
            return None
        height, width = image.shape[:2]
        return np.array(
            [[left.x * width, left.y * height], [right.x * width, right.y * height]],
            dtype=np.float32,
        ) - np.float32(0.5)

    def close(self) -> None:
        self._face_mesh.close()
        if self._pose is not None:
            self._pose.close()
