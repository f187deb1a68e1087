"""Renderers and their registry, selected by name (`--renderer`)."""

from __future__ import annotations

from talkcodec.generator.bank import DEFAULT_BANK_SIZE
from talkcodec.generator.base import Renderer
from talkcodec.generator.gan import GanRenderer
from talkcodec.generator.headwarp import HeadWarpRenderer
from talkcodec.generator.meshwarp import MeshWarpRenderer

__all__ = [
    "DEFAULT_BANK_SIZE",
    "RENDERERS",
    "GanRenderer",
    "HeadWarpRenderer",
    "MeshWarpRenderer",
    "Renderer",
    "make_renderer",
]

RENDERERS: dict[str, type[Renderer]] = {
    "meshwarp": MeshWarpRenderer,
    "headwarp": HeadWarpRenderer,
    "gan": GanRenderer,
}


def make_renderer(name: str, bank_size: int = DEFAULT_BANK_SIZE, backend: str = "auto") -> Renderer:
    """A new renderer by name, holding up to `bank_size` references; raises ValueError naming
    the valid ones. `backend` is the inference backend of renderers with a network (gan)."""
    try:
        renderer_class = RENDERERS[name]
    except KeyError:
        raise ValueError(
            f"unknown renderer {name!r}; choose one of {', '.join(RENDERERS)}"
        ) from None
    if renderer_class.uses_backend:
        return renderer_class(bank_size=bank_size, backend=backend)
    return renderer_class(bank_size=bank_size)
