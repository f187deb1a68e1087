"""talkcodec: a real-time generative video-call codec.

One keyframe coded with a learned (or classical) image codec, then a few dozen bits of
entropy-coded 3D keypoints per frame; the receiver re-synthesises each frame from them.
"""

__version__ = "0.1.0"
