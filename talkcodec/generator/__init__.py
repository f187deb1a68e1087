"""Renderers and their registry, selected by name (`--renderer`).

The registry names each renderer's module and class, and make_renderer imports that module only
when a renderer is made: importing the registry (the codec, the command line) never imports a
network's dependencies (torch, for gan).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from talkcodec.bank import DEFAULT_BANK_SIZE
from talkcodec.generator.backends.base import RefinerBackend
from talkcodec.generator.base import Renderer

__all__ = ["RENDERERS", "Renderer", "RendererEntry", "make_renderer", "renderer_class"]


@dataclass(frozen=True)
class RendererEntry:
    """Where a renderer lives: `module` and the Renderer subclass `class_name` in it."""

    module: str
    class_name: str

    def load(self) -> type[Renderer]:
        renderer_class: type[Renderer] = getattr(
            importlib.import_module(self.module), self.class_name
        )
        return renderer_class


RENDERERS: dict[str, RendererEntry] = {
    "meshwarp": RendererEntry("talkcodec.generator.meshwarp", "MeshWarpRenderer"),
    "headwarp": RendererEntry("talkcodec.generator.headwarp", "HeadWarpRenderer"),
    "gan": RendererEntry("talkcodec.generator.gan", "GanRenderer"),
}


def renderer_class(name: str) -> type[Renderer]:
    """The Renderer subclass registered as `name`; ValueError naming the valid ones."""
    try:
        entry = RENDERERS[name]
    except KeyError:
        raise ValueError(
            f"unknown renderer {name!r}; choose one of {', '.join(RENDERERS)}"
        ) from None
    return entry.load()


def make_renderer(
    name: str, bank_size: int = DEFAULT_BANK_SIZE, backend: str | RefinerBackend = "auto"
) -> Renderer:
    """A new renderer by name, holding up to `bank_size` references; raises ValueError naming
    the valid ones. `backend` is the inference backend of renderers with a network (gan): a
    name, or one already made (talkcodec.generator.backends.make_backend)."""
    chosen = renderer_class(name)
    if chosen.uses_backend:
        return chosen(bank_size=bank_size, backend=backend)  # type: ignore[call-arg]
    return chosen(bank_size=bank_size)
