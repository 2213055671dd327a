"""The shape of the offline tiny Qwen3-VL (:mod:`qsave.model.tiny`), importable without torch
so that training configs can name it."""

from __future__ import annotations

from dataclasses import dataclass

from qsave.errors import ConfigError


@dataclass(frozen=True)
class TinySize:
    """The tiny model's shape; heads follow the width (text head_dim 16, vision head_dim 32).
    The defaults are the ~1M-parameter model of the tests and the short demo recipe."""

    hidden: int = 64  # text and vision width
    intermediate: int = 256  # MLP width
    text_layers: int = 2
    vision_depth: int = 2

    def __post_init__(self) -> None:
        if self.hidden % 32 or min(self.intermediate, self.text_layers, self.vision_depth) < 1:
            raise ConfigError(f"tiny model size {self}: hidden must be a multiple of 32, the "
                             "other fields at least 1")
