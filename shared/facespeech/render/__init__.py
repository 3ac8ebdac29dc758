"""Render: model + speech audio -> frames composited on the reference crops -> mp4."""

from facespeech.render.cache import RendererCache
from facespeech.render.config import RenderConfig
from facespeech.render.reference import embed, is_embedded
from facespeech.render.render import Renderer, RenderResult, load, run

__all__ = [
    "RenderConfig", "RenderResult", "Renderer", "RendererCache", "embed", "is_embedded", "load",
    "run",
]
