"""Video decoding, SlowFast planning and Qwen3-VL processor inputs (paper Sec. 4.2.1)."""

from qsave.video.decode import DecodeConfig, DecodedVideo, VideoInfo, decode_video
from qsave.video.inputs import (
    PreparedVideo,
    VideoConfig,
    prepare_video,
    processor_video_kwargs,
    video_content,
)
from qsave.video.slowfast import SlowFastConfig, SlowFastPlan

__all__ = [
    "DecodeConfig",
    "DecodedVideo",
    "PreparedVideo",
    "SlowFastConfig",
    "SlowFastPlan",
    "VideoConfig",
    "VideoInfo",
    "decode_video",
    "prepare_video",
    "processor_video_kwargs",
    "video_content",
]
