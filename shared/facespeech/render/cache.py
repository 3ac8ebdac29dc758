"""Warm renderers of one process: the least recently used goes when count or memory is over.

A render worker keeps its models on the GPU between jobs (loading and moving the reference
crops costs seconds; rendering 60 s of speech takes about five). It lives in the worker
process that renders (the solo pool), so CUDA starts there and never before a fork.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

from facespeech.render.render import Renderer


class RendererCache:
    def __init__(self, max_models: int, max_bytes: int) -> None:
        self.max_models, self.max_bytes = max_models, max_bytes
        self._renderers: OrderedDict[Hashable, Renderer] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], Renderer]) -> tuple[Renderer, bool]:
        """-> (renderer, whether it was warm). The newest one stays even if it alone is over."""
        if key in self._renderers:
            self._renderers.move_to_end(key)
            return self._renderers[key], True
        renderer = load()
        self._renderers[key] = renderer
        while len(self._renderers) > 1 and (
            len(self._renderers) > self.max_models or self.nbytes() > self.max_bytes
        ):
            self._renderers.popitem(last=False)
            gc.collect()
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()  # hand the evicted model's memory back to the driver
        return renderer, False

    def nbytes(self) -> int:
        return sum(renderer.nbytes() for renderer in self._renderers.values())

    def __len__(self) -> int:
        return len(self._renderers)
