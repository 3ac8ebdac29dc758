"""nn.Modules of the talking head: audio encoder, tri-plane field, volume renderer, upsampler."""

from facespeech.model.audio import AudioEncoder, AudioSmoother
from facespeech.model.camera import head_rays
from facespeech.model.config import ModelConfig
from facespeech.model.field import TriPlaneField
from facespeech.model.head import TalkingHead
from facespeech.model.renderer import volume_render
from facespeech.model.upsampler import Upsampler

__all__ = [
    "AudioEncoder",
    "AudioSmoother",
    "ModelConfig",
    "TalkingHead",
    "TriPlaneField",
    "Upsampler",
    "head_rays",
    "volume_render",
]
