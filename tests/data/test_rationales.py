"""Rationales carry evidence, not the rating (Sec. 3.4.1, App. C.1, Fig. 2 step 3).

In the think-first format the rating is read after the rationale, so a rationale whose wording
depends on the rating teaches the model to read the rating off its own text. The check: a
bag-of-words logistic regression, cross-validated on the rationale text alone, must not
predict the rating better than the class prior on the MOS ≥ 4 records (Good vs Excellent), and
does on the old rating templates (so the check has power).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from qsave.cli import main
from qsave.data.annotations import MOS_COLUMNS, aggregate, load_ratings, load_videos
from qsave.data.defects import DEFECTS, adverb, degree
from qsave.data.describe import (
    CAMERA_WORDS,
    REASON_TEMPLATES,
    Clip,
    LmmDescriber,
    Reason,
    defect_reasons,
    make_describer,
    no_reason_given,
    rating_words,
)
from qsave.data.records import ATTRIBUTION_BELOW, build_records
from qsave.data.scene import CAMERAS, SceneSpec, all_specs
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import AnnotationError
from qsave.jsonl import read_jsonl
from qsave.prompts import parse_answer

# "No better than the prior": at most 2 records in 100 above the majority-class accuracy. A
# classifier that finds nothing in the text predicts the majority class and matches the prior.
TOLERANCE = 0.02
SEVERITY_WORDS = {word(s) for word in (adverb, degree) for s in (0.0, 0.5, 1.0)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """240 synthetic clips (720 records) with the MOS of their simulated raters; about 440
    records have MOS ≥ 4, some 55 of them Good."""
    out = tmp_path_factory.mktemp("rationale-corpus")
    write_corpus(out, SynthConfig(n=240, seed=7, size=16, seconds=0.5))
    videos = load_videos(out / "manifest.jsonl")
    return videos, aggregate(load_ratings(out / "ratings.csv"), videos).mos


def text_vs_prior(texts: list[str], labels: list[str]) -> tuple[float, float]:
    """5-fold accuracy of bag-of-words + logistic regression on the texts alone, and of the
    majority class of each training fold (the class prior)."""
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    words = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=2000))
    with threadpool_limits(1):  # BLAS threads only slow these small fits down
        return (float(cross_val_score(words, texts, labels, cv=folds).mean()),
                float(cross_val_score(DummyClassifier(), texts, labels, cv=folds).mean()))


def old_template(dimension: Dimension, rating: str) -> str:
    """The rationale the records had before issue 18 (policy "criteria"): it named the rating."""
    names = [c.split(":", 1)[0].strip().lower() for c in dimension.criteria]
    names = f"{', '.join(names[:-1])} and {names[-1]}"
    if rating == "Excellent":
        return (f"The {dimension.title} meets all three criteria: {names} show no noticeable "
                "defects.")
    if rating == "Good":
        return (f"The {dimension.title} is good: {names} show no clear defects, with at most "
                "minor imperfections.")
    return (f"The {dimension.title} is {rating.lower()}: it falls short on {names}, though no "
            "specific defect was annotated.")


def rationale(record) -> str:
    return parse_answer(record.target).rationale


def test_strengths_do_not_give_the_rating_away(corpus) -> None:
    videos, mos = corpus
    high = [r for r in build_records(videos, mos).records if r.mos >= ATTRIBUTION_BELOW]
    labels = [r.rating for r in high]
    assert {r.rationale_source for r in high} == {"strengths"}
    assert labels.count("Good") >= 40 and labels.count("Excellent") >= 40  # both classes
    accuracy, prior = text_vs_prior([rationale(r) for r in high], labels)
    assert accuracy <= prior + TOLERANCE, (accuracy, prior)
    old_accuracy, _ = text_vs_prior([old_template(Dimension(r.dimension), r.rating)
                                     for r in high], labels)
    assert old_accuracy >= prior + 0.1, (old_accuracy, prior)  # the leak the check catches


def test_figures_on_all_and_low_records(corpus) -> None:
    """The rationales do carry evidence overall (a described problem or none), in the
    dataset's attributions and in the template describer's text; printed with ``-s``."""
    videos, mos = corpus
    no_attributions = videos.drop(columns=[c for c in videos if c.startswith("attribution_")])
    for name, table in (("attributions", videos), ("template describer", no_attributions)):
        records = build_records(table, mos).records
        subsets = {"all": records, "MOS ≥ 4": [r for r in records if r.mos >= ATTRIBUTION_BELOW],
                   "MOS < 4": [r for r in records if r.mos < ATTRIBUTION_BELOW]}
        for subset, chosen in subsets.items():
            accuracy, prior = text_vs_prior([rationale(r) for r in chosen],
                                            [r.rating for r in chosen])
            print(f"{name:>18} {subset:>7}: n={len(chosen)} accuracy {accuracy:.3f} "
                  f"prior {prior:.3f}")
            if subset == "all":
                assert accuracy >= prior + 0.1, (name, accuracy, prior)


def test_described_problems_name_no_rating_and_no_severity(corpus) -> None:
    videos, mos = corpus
    table = videos.drop(columns=[c for c in videos if c.startswith("attribution_")])
    records = build_records(table, mos).records
    sources = {r.rationale_source for r in records if r.mos < ATTRIBUTION_BELOW}
    assert sources == {"labelled_defects", "unannotated"}
    for record in records:
        assert_no_rating_or_severity(rationale(record))


def assert_no_rating_or_severity(text: str) -> None:
    assert not rating_words(text), text
    assert not set(re.findall(r"[a-z]+", text.lower())) & SEVERITY_WORDS, text


def test_every_template_text_is_free_of_ratings_and_severities() -> None:
    assert set(DEFECTS) <= set(REASON_TEMPLATES)  # every defect kind is a reason code
    assert set(CAMERA_WORDS) == set(CAMERAS)
    describe = make_describer("template")
    clips = [Clip(), Clip("A red kite rises."), *(Clip(scene=s) for s in all_specs()[::29])]
    for dimension in DIMENSIONS:
        assert_no_rating_or_severity(no_reason_given(dimension))
        for clip in clips:
            assert_no_rating_or_severity(describe(dimension, [], clip))
            for code in REASON_TEMPLATES:
                assert_no_rating_or_severity(describe(dimension, [Reason(code, 0.5, 1.0)], clip))


def test_good_and_excellent_get_the_same_text(tmp_path) -> None:
    """MOS ≥ 4 has no attribution by design (App. C.1): one given anyway, and raters'
    reasons, are not used, and the rating does not change the text."""
    scene = SceneSpec("blue", "square", 3, "up", "zoom in", "striped wall")
    videos = pd.DataFrame([{"video_id": v, "path": f"{v}.mp4", "prompt": scene.prompt,
                            "generator": "g", "scene": scene.to_dict(),
                            "attribution_visual": "The picture is slightly blurred."}
                           for v in ("good", "excellent")])
    mos = pd.DataFrame([(v, "visual", m, 0.3, 3, m) for v, m in (("good", 4.05),
                                                                  ("excellent", 4.9))],
                       columns=list(MOS_COLUMNS))
    reasons = {(v, "visual"): ["blur"] for v in ("good", "excellent")}
    good, excellent = build_records(videos, mos, reasons=reasons).records
    assert (good.rating, excellent.rating) == ("Good", "Excellent")
    assert rationale(good) == rationale(excellent) == (
        "The three blue squares stand out with crisp edges against the striped wall, whose "
        "texture keeps its fine detail; the colours are clean.")
    assert good.rationale_source == excellent.rationale_source == "strengths"


def test_reasons_with_time_ranges_and_bad_inputs() -> None:
    spec = SceneSpec("green", "triangle", 1, "left", "pan left", "checkered floor")
    reasons = defect_reasons({"dynamic": [{"kind": "jitter", "severity": 0.9, "start": 0.5,
                                           "end": 1.25, "detail": None}]}, Dimension.DYNAMIC)
    assert reasons == [Reason("jitter", 0.5, 1.25)]  # the severity is left out
    assert make_describer("template")(Dimension.DYNAMIC, reasons, Clip(scene=spec)) == (
        "The green triangle jitters from frame to frame between 0.5 s and 1.2 s.")
    assert Reason("Wrong-Color").code == "wrong_color"
    with pytest.raises(AnnotationError, match="both start and end"):
        Reason("blur", 1.0)
    with pytest.raises(AnnotationError, match="empty time range"):
        Reason("blur", 2.0, 1.0)
    with pytest.raises(AnnotationError, match="video 'v' has a bad scene"):
        Clip.from_row({"video_id": "v", "scene": {"color": "mauve"}})
    with pytest.raises(AnnotationError, match="should map dimensions"):
        defect_reasons(["blur"], Dimension.VISUAL)


def test_a_rating_word_in_a_rationale_is_reported() -> None:
    videos = pd.DataFrame([{"video_id": "v", "path": "v.mp4", "prompt": "p", "generator": "g",
                            "attribution_dynamic": "Poor motion: the ball stutters."}])
    mos = pd.DataFrame([("v", "dynamic", 2.0, 0.3, 3, 2.0)], columns=list(MOS_COLUMNS))
    problems = [p for p in build_records(videos, mos).problems if p.kind != "missing_mos"]
    assert [(p.kind, p.severity, p.dimension) for p in problems] == [
        ("rating_word", "warning", "dynamic")]
    assert "['Poor']" in problems[0].message


def test_lmm_describer_writes_text_on_the_tiny_model(tiny) -> None:
    """Runs and returns text (the tiny model is random: no claim about quality)."""
    describer = LmmDescriber(tiny.model, tiny.processor, max_new_tokens=12)
    reasons, clip = [Reason("blur", 0.5, 1.0)], Clip("A red kite rises.")
    assert "The picture is blurred" in describer.prompt(Dimension.VISUAL, reasons, clip)
    assert "between 0.5 s and 1.0 s" in describer.prompt(Dimension.VISUAL, reasons, clip)
    text = describer(Dimension.VISUAL, reasons, clip)
    assert isinstance(text, str) and text and not rating_words(text)  # rating words banned


@pytest.mark.slow  # loads the tiny model in the CLI
def test_cli_records_with_the_lmm_describer(tmp_path, capsys) -> None:
    write_corpus(tmp_path / "c", SynthConfig(n=1, seed=1, size=16, seconds=0.5))
    args = ["data", "records", "--videos", str(tmp_path / "c" / "manifest.jsonl"), "-o",
            str(tmp_path / "records.jsonl"), "--describer", "lmm"]
    assert main([*args, "--describer-model", "tiny"]) == 0
    rows = [row for _, row in read_jsonl(tmp_path / "records.jsonl").rows]
    assert len(rows) == 3 and all(parse_answer(r["target"]).ok for r in rows)
    capsys.readouterr()
    assert main(args) == 1  # no model to write with
    assert "the 'lmm' describer writes with a model" in capsys.readouterr().err
