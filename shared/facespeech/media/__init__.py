"""Decode and encode video and audio with PyAV: probe, frames at 25 fps, 16 kHz mono, mp4 out."""

from facespeech.media.audio import load_audio
from facespeech.media.probe import MediaInfo, probe
from facespeech.media.video import iter_video_frames
from facespeech.media.writer import VideoWriter

__all__ = ["MediaInfo", "VideoWriter", "iter_video_frames", "load_audio", "probe"]
