"""Render settings: plain data, with limits on the fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Background = Literal["reference", "still", "green", "transparent"]
Motion = Literal["pingpong", "still"]


class RenderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what the video looks like (the API's render options) ---
    size: int | None = Field(None, ge=256, le=1024, multiple_of=2)  # None: the model's crop size
    fps: int = Field(25, ge=10, le=60)
    # behind and around the rendered face: the walking reference crops, the first reference
    # crop held still, chroma-key green, or nothing: the person alone over a transparent
    # background, written as WebM (VP9 with alpha) instead of mp4
    background: Background = "reference"
    # head pose: the reference frames walked forwards and backwards, or the first one held
    motion: Motion = "pingpong"
    # blinks per minute drawn on a regular, jittered schedule; None: the reference's own blinks
    # (a model that draws over its target shows the reference's own eyes whatever this says)
    blink_rate: float | None = Field(None, ge=0, le=60)

    @property
    def transparent(self) -> bool:
        return self.background == "transparent"

    @property
    def suffix(self) -> str:
        """The output file's suffix: a transparent render is a WebM with alpha, else mp4."""
        return ".webm" if self.transparent else ".mp4"

    @property
    def content_type(self) -> str:
        return "video/webm" if self.transparent else "video/mp4"

    # --- how it runs ---
    batch_size: int = Field(0, ge=0, le=512)  # frames per forward pass; 0: 48 on CUDA, 8 on CPU
    min_seconds: float = Field(0.5, gt=0)
    max_seconds: float = Field(600.0, gt=0, le=3600)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False  # torch.compile the model (CUDA only; tens of seconds once per model)
    crf: int = Field(20, ge=0, le=51)  # H.264 quality, lower is better
    # Width of the soft edge of the pasted face, as a fraction of the crop side.
    feather: float = Field(0.04, ge=0, le=0.25)
    # How far the paste region reaches beyond the face mask (jaw, chin), fraction of the side.
    grow: float = Field(0.03, ge=0, le=0.25)
