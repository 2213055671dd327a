"""A synthetic Q-Save-like corpus: encoded clips with known defects, MOS and simulated raters.

It stands in for the paper's dataset (Sec. 3.1–3.3, App. C) so that every later stage can be
built and measured offline:

- clips: H.264 MP4 (libx264, yuv420p) drawn from a prompt template (:mod:`qsave.data.scene`)
  by simulated *generators*, each with its own defect profile (so model-level metrics,
  App. B, have something to rank), with labelled defects (:mod:`qsave.data.defects`);
- ground-truth MOS per dimension (:func:`ground_truth_mos`), and an overall MOS;
- ratings by a pool of simulated raters (≥ 3 per training clip, ≥ 12 per test clip, Sec. 3.3),
  each with a bias and a noise level, a few of them unreliable (random answers), recorded in
  ``raters.json`` so that rater screening (App. C, "Sample and Scrutinize") can be checked;
- an attribution sentence per defective dimension (Sec. 3.3, App. C);
- splits ``train`` / ``test`` (disjoint prompts) and ``rl`` with its own prompts and its own
  generators (App. C, "Reinforcement Learning Dataset").

Everything is a function of :class:`SynthConfig`, its seed included: the manifest, the ratings
and the rendered frames are identical across runs. The encoded clips are not always
byte-identical: libx264 (one thread) sometimes writes other bytes for the same frames, about one
write in three within a long test process (decoded frames then differ by ~0.25 levels on
average, at most ~12); figures that must repeat exactly are measured on stored clips (the
shipped tiny-demo held-out set).

>>> config = SynthConfig(n=8, seed=1)
>>> [split_sizes(config)[s] for s in SPLITS]
[6, 1, 1]
>>> ground_truth_mos([])["visual"]
5.0
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from qsave.data.defects import (
    DEFECTS,
    Defect,
    apply_frame_defect,
    apply_scene_defect,
    describe,
    kinds_of,
    place_defect,
    render_clip,
)
from qsave.data.scene import SceneSpec, all_specs, frame_count, plan_scene, render_frames
from qsave.dimensions import DIMENSIONS, MOS_MAX, MOS_MIN, Dimension
from qsave.errors import ConfigError, QsaveError, VideoError
from qsave.registry import Registry

__all__ = [
    "GENERATORS",
    "RATED",
    "SPLITS",
    "ClipRecord",
    "Corpus",
    "Defect",
    "SceneSpec",
    "SynthConfig",
    "apply_frame_defect",
    "apply_scene_defect",
    "ground_truth_mos",
    "load_synth_config",
    "place_defect",
    "plan_corpus",
    "plan_scene",
    "render_clip",
    "render_frames",
    "synthesize",
    "write_corpus",
]

SPLITS: tuple[str, ...] = ("train", "test", "rl")
RATED: tuple[str, ...] = (*(d.value for d in DIMENSIONS), "overall")  # the paper's 4 ratings
RL_PROMPT_EVERY = 8  # every 8th template combination is reserved for the rl split
OVERALL_NOISE = 0.15  # std of the overall MOS around the mean of the three dimensions
MIN_SEVERITY = 0.1  # sampled severities are 0.1 + 0.9·Beta(a, b)
SECOND_DEFECT = 0.2  # chance of a second, different kind within a defective dimension


@dataclass(frozen=True)
class SynthConfig:
    """What corpus to write; the CLI flags of ``qsave data synth`` mirror these fields."""

    n: int = 24  # number of clips over all splits
    seed: int = 0  # the corpus is a function of this seed
    size: int = 64  # frame width and height, pixels (even, for yuv420p)
    fps: int = 8  # frames per second
    seconds: float = 2.0  # clip duration
    test_fraction: float = 0.2  # share of the non-rl clips in the test split (paper: 80:20)
    rl_fraction: float = 0.125  # share of all clips in the rl split
    raters: int = 20  # size of the simulated rater pool
    unreliable: int = 3  # raters in the pool who answer at random
    raters_train: int = 3  # raters per train / rl clip (paper: at least 3)
    raters_test: int = 12  # raters per test clip (paper: at least 12)
    crf: int = 12  # x264 constant rate factor; low, so the labelled defects dominate
    rater_bias: float = 0.25  # std of a reliable rater's bias, MOS points
    rater_noise: tuple[float, float] = (0.3, 0.7)  # range of a reliable rater's noise std
    kinds: tuple[str, ...] = ()  # defect kinds that may be drawn; () = every registered kind
    videos_per_prompt: int = 1  # clips sharing one prompt (different generators, as in the
    # paper's dataset): what within-prompt preference pairs are built from
    every_dimension: bool = False  # each clip: one defect per dimension at severity U(0, 1),
    # graded kinds over the whole clip (sample_every_dimension), instead of the generators'
    # sparse profiles

    def __post_init__(self) -> None:
        if self.n < 1 or self.videos_per_prompt < 1:
            raise ConfigError(f"n ({self.n}) and videos_per_prompt ({self.videos_per_prompt}) "
                              "must be at least 1")
        if self.size < 16 or self.size % 2:
            raise ConfigError(f"size ({self.size}) must be even and at least 16 (yuv420p)")
        if self.fps < 1 or frame_count(self.fps, self.seconds) < 4:
            raise ConfigError(
                f"fps ({self.fps}) × seconds ({self.seconds}) must give at least 4 frames"
            )
        for name in ("test_fraction", "rl_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be in [0, 1)")
        self._check_raters()
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf ({self.crf}) must be in 0..51")
        unknown = [k for k in self.kinds if k not in DEFECTS]
        if unknown:
            raise ConfigError(f"unknown defect kinds {unknown}; known: {', '.join(DEFECTS)}")

    def _check_raters(self) -> None:
        if not 1 <= self.raters_train <= self.raters:
            raise ConfigError(
                f"raters_train ({self.raters_train}) must be in 1..raters ({self.raters})"
            )
        if not 1 <= self.raters_test <= self.raters:
            raise ConfigError(
                f"raters_test ({self.raters_test}) must be in 1..raters ({self.raters})"
            )
        if not 0 <= self.unreliable < self.raters:
            raise ConfigError(
                f"unreliable ({self.unreliable}) must be in 0..raters-1 ({self.raters - 1})"
            )
        low, high = self.rater_noise
        if not 0 <= low <= high:
            raise ConfigError(f"rater_noise ({self.rater_noise}) must be a range 0 ≤ low ≤ high")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> SynthConfig:
        """Build from a dict (parsed YAML/JSON); an unknown key raises and lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(
                f"unknown SynthConfig fields {unknown}; valid: {', '.join(sorted(valid))}"
            )
        data = dict(values)
        for name in ("rater_noise", "kinds"):
            if name in data:
                data[name] = tuple(data[name])  # type: ignore[arg-type]
        return cls(**data)  # type: ignore[arg-type]


def load_synth_config(path: Path | str) -> dict[str, object]:
    """The SynthConfig fields in a YAML or JSON file, as a dict for ``from_mapping``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read synth config {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"synth config {path} must be a mapping of SynthConfig fields")
    return data


# --- generators ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorProfile:
    """A simulated text-to-video model: how often and how badly each dimension goes wrong."""

    name: str  # the generator id written to the manifest
    rl: bool  # True: generates the rl split only; False: train and test
    rates: tuple[float, float, float]  # P(defect) for visual, dynamic, alignment
    severity: tuple[float, float]  # Beta(a, b) of severities (before 0.1 + 0.9·x)
    favourites: tuple[str, ...] = ()  # kinds drawn three times as often as the others


GENERATORS: Registry[GeneratorProfile] = Registry("generator")


def register_generator(profile: GeneratorProfile) -> GeneratorProfile:
    """Add ``profile`` to :data:`GENERATORS`; a duplicate name raises."""
    unknown = [k for k in profile.favourites if k not in DEFECTS]
    if unknown:
        raise ConfigError(f"generator {profile.name!r} favours unknown defect kinds {unknown}")
    return GENERATORS.add(profile.name, profile)


for _profile in (
    GeneratorProfile("aurora-2", False, (0.15, 0.2, 0.15), (1.2, 4.0)),
    GeneratorProfile("brisk-1", False, (0.6, 0.3, 0.2), (2.0, 2.5), ("blur", "lowres")),
    GeneratorProfile(
        "cinder-xl", False, (0.25, 0.65, 0.2), (2.0, 2.0), ("stutter", "frozen", "jitter")
    ),
    GeneratorProfile(
        "delta-lite", False, (0.25, 0.3, 0.6), (2.0, 2.0), ("wrong_count", "wrong_color")
    ),
    GeneratorProfile("ember-3", False, (0.45, 0.45, 0.35), (2.0, 2.0)),
    GeneratorProfile("fable-0", False, (0.75, 0.7, 0.55), (3.0, 1.6)),
    GeneratorProfile("gale-2", True, (0.35, 0.3, 0.25), (1.5, 3.0)),
    GeneratorProfile("halo-1", True, (0.5, 0.5, 0.4), (2.0, 2.0), ("noise", "flicker", "teleport")),
    GeneratorProfile(
        "iris-pro", True, (0.2, 0.4, 0.3), (1.5, 2.5), ("deform", "wrong_shape", "missing_object")
    ),
):
    register_generator(_profile)


def generators_for(split: str) -> tuple[str, ...]:
    """Generator ids of a split: the rl split has its own, disjoint from train/test."""
    return tuple(name for name, p in GENERATORS.items() if p.rl == (split == "rl"))


def sample_defects(
    profile: GeneratorProfile,
    spec: SceneSpec,
    n_frames: int,
    fps: int,
    rng: np.random.Generator,
    allowed: Sequence[str] = (),
) -> list[Defect]:
    """Defects of one clip: per dimension, with the profile's rate, one kind (sometimes two),
    drawn among the ``allowed`` kinds (all when empty)."""
    defects: list[Defect] = []
    for dimension, rate in zip(DIMENSIONS, profile.rates, strict=True):
        kinds = _allowed(dimension, allowed)
        if not kinds or rng.random() >= rate:
            continue
        weights = np.array([3.0 if k in profile.favourites else 1.0 for k in kinds])
        n_kinds = min(len(kinds), 2 if rng.random() < SECOND_DEFECT else 1)
        for kind in rng.choice(kinds, size=n_kinds, replace=False, p=weights / weights.sum()):
            severity = MIN_SEVERITY + (1 - MIN_SEVERITY) * rng.beta(*profile.severity)
            defects.append(
                place_defect(str(kind), round(float(severity), 4), spec, n_frames, fps, rng)
            )
    return defects


def sample_every_dimension(
    spec: SceneSpec, n_frames: int, fps: int, rng: np.random.Generator, allowed: Sequence[str] = ()
) -> list[Defect]:
    """Defects of one clip in the dense design: per dimension one ``allowed`` kind, severity
    uniform in [0, 1], independent across dimensions; graded kinds cover the whole clip, the
    others (a wrong colour, a freeze) a window that grows with severity, so that severity
    always shows. A dimension with no allowed kind stays clean."""
    defects = []
    for dimension in DIMENSIONS:
        kinds = _allowed(dimension, allowed)
        if kinds:
            kind, severity = str(rng.choice(kinds)), round(float(rng.uniform(0.0, 1.0)), 4)
            defects.append(
                place_defect(kind, severity, spec, n_frames, fps, rng, whole_clip=True)
            )
    return defects


def _allowed(dimension: Dimension, allowed: Sequence[str]) -> list[str]:
    return [k for k in kinds_of(dimension) if not allowed or k in allowed]


# --- ground truth ----------------------------------------------------------------------------


def ground_truth_mos(defects: Sequence[Defect], overall_noise: float = 0.0) -> dict[str, float]:
    """MOS per dimension: ``MOS_d = 1 + 4·Π_{k ∈ d} (1 − s_k)`` over the defects k of d.

    A clean dimension scores 5 (Excellent under R(s), Sec. 3.4.2); one defect of severity 1
    scores 1 (Bad); the MOS falls strictly with every severity while the others are below 1.
    ``overall`` is the mean of the three plus ``overall_noise`` (a draw of
    ``N(0, OVERALL_NOISE)`` made by the caller), clipped to [1, 5].

    >>> mos = ground_truth_mos([Defect("blur", 0.5, 0, 1), Defect("noise", 0.5, 0, 1)])
    >>> mos["visual"], mos["dynamic"], mos["overall"]
    (2.0, 5.0, 4.0)
    """
    mos: dict[str, float] = {}
    for dimension in DIMENSIONS:
        quality = math.prod(1.0 - d.severity for d in defects if d.dimension is dimension)
        mos[dimension.value] = MOS_MIN + (MOS_MAX - MOS_MIN) * quality
    mean = sum(mos.values()) / len(DIMENSIONS)
    mos["overall"] = min(MOS_MAX, max(MOS_MIN, mean + overall_noise))
    return mos


def attributions(
    spec: SceneSpec, defects: Sequence[Defect], fps: int, n_frames: int
) -> dict[str, str | None]:
    """Per dimension: the defects' clauses joined into one sentence, or None if clean."""
    out: dict[str, str | None] = {}
    for dimension in DIMENSIONS:
        clauses = [describe(d, spec, fps, n_frames) for d in defects if d.dimension is dimension]
        out[dimension.value] = _sentence(clauses) if clauses else None
    return out


def _sentence(clauses: list[str]) -> str:
    text = "; ".join(clauses)
    return text[0].upper() + text[1:] + "."


# --- raters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rater:
    """A simulated rater: a reliable one answers round(MOS + bias + noise); others at random."""

    id: str  # e.g. "r07"
    reliable: bool  # False: answers uniformly at random in 1..5
    bias: float  # added to every MOS it rates (reliable raters)
    noise: float  # std of its per-rating noise (reliable raters)


def make_raters(config: SynthConfig) -> list[Rater]:
    """The rater pool; which ``config.unreliable`` raters answer at random is seeded."""
    rng = np.random.default_rng([config.seed, 3])
    unreliable = set(rng.choice(config.raters, size=config.unreliable, replace=False).tolist())
    width = len(str(config.raters - 1))
    pool = []
    for index in range(config.raters):
        bias = float(rng.normal(0.0, config.rater_bias))
        noise = float(rng.uniform(*config.rater_noise))
        pool.append(Rater(f"r{index:0{max(2, width)}d}", index not in unreliable, bias, noise))
    return pool


def rate_clip(
    mos: Mapping[str, float], raters: Sequence[Rater], rng: np.random.Generator
) -> list[tuple[str, str, int]]:
    """``(rater_id, dimension, score)`` for each rater and each of the four rated dimensions."""
    rows = []
    for rater in raters:
        for dimension in RATED:
            if rater.reliable:
                value = mos[dimension] + rater.bias + rng.normal(0.0, rater.noise)
                score = int(np.clip(np.rint(value), MOS_MIN, MOS_MAX))
            else:
                score = int(rng.integers(1, 6))
            rows.append((rater.id, dimension, score))
    return rows


# --- corpus ----------------------------------------------------------------------------------


@dataclass
class ClipRecord:
    """One manifest line; ``path`` is relative to the manifest's folder."""

    id: str
    path: str
    prompt: str
    generator: str
    split: str
    size: list[int]  # [width, height]
    fps: int
    seconds: float
    frames: int
    scene: dict[str, object]  # the SceneSpec fields: what the prompt asks for
    defects: dict[str, list[dict[str, object]]]  # dimension → [{kind, severity, start, end, …}]
    mos: dict[str, float]  # visual, dynamic, alignment, overall on 1..5
    attributions: dict[str, str | None]  # dimension → sentence, None when clean

    def to_json(self) -> str:
        """The manifest line (keys in a fixed order)."""
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class Corpus:
    """What :func:`write_corpus` wrote."""

    clips: list[ClipRecord]
    manifest_path: Path
    ratings_path: Path
    raters_path: Path
    errors: list[str] = field(default_factory=list)  # "<clip id>: <message>" per failed clip


def split_sizes(config: SynthConfig) -> dict[str, int]:
    """Clips per split: rl = floor(n·rl_fraction), test = round((n − rl)·test_fraction)."""
    n_rl = math.floor(config.n * config.rl_fraction)
    n_test = round((config.n - n_rl) * config.test_fraction)
    return {"train": config.n - n_rl - n_test, "test": n_test, "rl": n_rl}


@dataclass(frozen=True)
class ClipPlan:
    """What one clip will be, before any pixel is drawn."""

    index: int
    id: str
    split: str
    generator: str
    spec: SceneSpec


def plan_corpus(config: SynthConfig) -> list[ClipPlan]:
    """Splits, prompts and generators of every clip.

    Splits are shuffled over the clip indices. Prompts of train and test come from disjoint
    parts of the template pool, rl prompts from a third part (every 8th combination); within
    a split, ``videos_per_prompt`` consecutive clips share a prompt and generators take turns.
    """
    rng = np.random.default_rng([config.seed, 1])
    sizes = split_sizes(config)
    splits = rng.permutation([s for s in SPLITS for _ in range(sizes[s])]).tolist()
    pools = _prompt_pools(rng, config.test_fraction)
    seen = {s: 0 for s in SPLITS}
    plans = []
    for index, split in enumerate(splits):
        k = seen[split]
        seen[split] += 1
        names = generators_for(split)
        pool = pools[split]
        plans.append(
            ClipPlan(index, f"syn-{index:05d}", split, names[k % len(names)],
                     pool[(k // config.videos_per_prompt) % len(pool)])
        )
    return plans


def _prompt_pools(rng: np.random.Generator, test_fraction: float) -> dict[str, list[SceneSpec]]:
    specs = all_specs()
    rl = [s for i, s in enumerate(specs) if i % RL_PROMPT_EVERY == 0]
    main = [specs[i] for i in rng.permutation(len(specs)) if i % RL_PROMPT_EVERY != 0]
    n_test = max(1, round(len(main) * test_fraction))
    rl = [rl[i] for i in rng.permutation(len(rl))]
    return {"test": main[:n_test], "train": main[n_test:], "rl": rl}


def synthesize(plan: ClipPlan, config: SynthConfig) -> tuple[ClipRecord, np.ndarray]:
    """Draw one planned clip: its manifest record and its (T, H, W, 3) uint8 frames."""
    rng = np.random.default_rng([config.seed, 4, plan.index])
    clip_seed = int(rng.integers(0, 2**31))
    n_frames = frame_count(config.fps, config.seconds)
    if config.every_dimension:
        defects = sample_every_dimension(plan.spec, n_frames, config.fps, rng, config.kinds)
    else:
        profile = GENERATORS[plan.generator]
        defects = sample_defects(profile, plan.spec, n_frames, config.fps, rng, config.kinds)
    scene = plan_scene(plan.spec, config.size, config.fps, config.seconds, clip_seed)
    frames = render_clip(scene, defects, clip_seed)
    mos = ground_truth_mos(defects, float(rng.normal(0.0, OVERALL_NOISE)))
    record = ClipRecord(
        id=plan.id,
        path=f"clips/{plan.id}.mp4",
        prompt=plan.spec.prompt,
        generator=plan.generator,
        split=plan.split,
        size=[config.size, config.size],
        fps=config.fps,
        seconds=config.seconds,
        frames=n_frames,
        scene=plan.spec.to_dict(),
        defects={d.value: [x.to_dict() for x in defects if x.dimension is d] for d in DIMENSIONS},
        mos={k: round(v, 4) for k, v in mos.items()},
        attributions=attributions(plan.spec, defects, config.fps, n_frames),
    )
    return record, frames


def encode_mp4(frames: np.ndarray, path: Path, fps: int, crf: int = 12) -> None:
    """Write (T, H, W, 3) uint8 RGB frames as H.264 (libx264, yuv420p) MP4, single-threaded.

    One encoder thread keeps the bytes identical across runs; failures raise VideoError
    naming the file.
    """
    import av

    try:
        with av.open(str(path), "w", format="mp4") as container:
            options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            stream = container.add_stream("libx264", rate=fps, options=options)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            for array in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"cannot encode {path}: {error}") from error


def write_corpus(out: Path | str, config: SynthConfig | None = None) -> Corpus:
    """Write ``clips/<id>.mp4``, ``manifest.jsonl``, ``ratings.csv`` and ``raters.json``.

    A clip that fails is reported in ``Corpus.errors`` and left out; the others are written.
    """
    config = config or SynthConfig()
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    pool = make_raters(config)
    corpus = Corpus([], out / "manifest.jsonl", out / "ratings.csv", out / "raters.json")
    rows: list[tuple[str, str, str, int]] = []
    for plan in plan_corpus(config):
        try:
            record, frames = synthesize(plan, config)
            encode_mp4(frames, out / record.path, config.fps, config.crf)
        except QsaveError as error:
            corpus.errors.append(f"{plan.id}: {error}")
            continue
        corpus.clips.append(record)
        rows += _clip_ratings(record, plan.index, pool, config)
    _write_manifest(corpus.manifest_path, corpus.clips)
    _write_ratings(corpus.ratings_path, rows)
    _write_raters(corpus.raters_path, pool, config)
    return corpus


def _clip_ratings(
    record: ClipRecord, index: int, pool: Sequence[Rater], config: SynthConfig
) -> list[tuple[str, str, str, int]]:
    rng = np.random.default_rng([config.seed, 5, index])
    k = config.raters_test if record.split == "test" else config.raters_train
    chosen = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
    scores = rate_clip(record.mos, [pool[i] for i in chosen], rng)
    return [(record.id, rater, dim, score) for rater, dim, score in scores]


def _write_manifest(path: Path, clips: Sequence[ClipRecord]) -> None:
    path.write_text("".join(clip.to_json() + "\n" for clip in clips), encoding="utf-8")


def _write_ratings(path: Path, rows: Sequence[tuple[str, str, str, int]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("video_id", "rater_id", "dimension", "score"))
        writer.writerows(rows)


def _write_raters(path: Path, pool: Sequence[Rater], config: SynthConfig) -> None:
    data = {
        "raters": [
            {
                "id": r.id,
                "reliable": r.reliable,
                "bias": round(r.bias, 4),
                "noise": round(r.noise, 4),
            }
            for r in pool
        ],
        "unreliable": [r.id for r in pool if not r.reliable],
        "per_clip": {
            "train": config.raters_train,
            "test": config.raters_test,
            "rl": config.raters_train,
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
