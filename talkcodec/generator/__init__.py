"""Renderers and their registry, selected by name (`--renderer`)."""

from __future__ import annotations

from talkcodec.generator.base import Renderer
from talkcodec.generator.meshwarp import MeshWarpRenderer

__all__ = ["RENDERERS", "MeshWarpRenderer", "Renderer", "make_renderer"]

RENDERERS: dict[str, type[Renderer]] = {
    "meshwarp": MeshWarpRenderer,
}


def make_renderer(name: str) -> Renderer:
    """A new renderer by name; raises ValueError naming the valid ones."""
    try:
        renderer_class = RENDERERS[name]
    except KeyError:
        raise ValueError(
            f"unknown renderer {name!r}; choose one of {', '.join(RENDERERS)}"
        ) from None
    return renderer_class()
