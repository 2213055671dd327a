"""Training records: CoT format, R(s), rationale sources, JSONL round trip, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from qsave.data.annotations import MOS_COLUMNS, normalize_videos
from qsave.data.describe import Clip, make_describer, no_reason_given
from qsave.data.records import (
    RecordConfig,
    build_messages,
    build_records,
    load_records,
    write_records,
)
from qsave.dimensions import Dimension
from qsave.errors import AnnotationError, ConfigError
from qsave.prompts import AnswerFormat, dimension_question, parse_answer, video_context


def _videos(tmp_path: Path) -> pd.DataFrame:
    frame = pd.DataFrame([
        {"video_id": "a", "path": str(tmp_path / "clips" / "a.mp4"), "prompt": "a red ball",
         "generator": "g1", "split": "train",
         "attributions": {"dynamic": "The red ball stutters between 1.2 s and 2.0 s."}},
        {"video_id": "b", "path": str(tmp_path / "clips" / "b.mp4"), "prompt": "a blue cube",
         "generator": "g2", "split": "test", "attributions": {}},
    ])
    return normalize_videos(frame)


def _mos(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([(v, d, m, 0.5, 3, m) for v, d, m in rows], columns=list(MOS_COLUMNS))


MOS = _mos([("a", "visual", 4.6), ("a", "dynamic", 2.1), ("a", "alignment", 4.2),
            ("a", "overall", 3.0), ("b", "visual", 4.21), ("b", "dynamic", 3.0),
            ("b", "alignment", 1.0)])


def test_records_follow_sec_3_4(tmp_path) -> None:
    result = build_records(_videos(tmp_path), MOS)
    by_id = {r.id: r for r in result.records}
    assert sorted(by_id) == ["a:alignment", "a:dynamic", "a:visual", "b:alignment",
                             "b:dynamic", "b:visual"]  # overall is not a learned dimension
    expected = {"a:visual": "Excellent", "a:dynamic": "Poor", "a:alignment": "Good",
                "b:visual": "Excellent", "b:dynamic": "Fair", "b:alignment": "Bad"}
    assert {k: r.rating for k, r in by_id.items()} == expected  # R(s): 4.2 Good, 4.21 Exc.
    record = by_id["a:dynamic"]
    assert record.target == ("<think>The red ball stutters between 1.2 s and 2.0 s.</think>"
                             "Poor")
    assert record.rationale_source == "attribution"
    assert record.score == pytest.approx((2.1 - 1) / 4)
    user = record.messages[0]
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "video", "video": str(tmp_path / "clips" / "a.mp4")}
    assert user["content"][1]["text"] == (video_context("a red ball") + "\n"
                                          + dimension_question(Dimension.DYNAMIC))
    assert record.messages[-1] == {"role": "assistant",
                                   "content": [{"type": "text", "text": record.target}]}


def test_strengths_and_missing_attribution(tmp_path) -> None:
    result = build_records(_videos(tmp_path), MOS)
    by_id = {r.id: r for r in result.records}
    visual = by_id["a:visual"]  # MOS 4.6 ≥ 4: what the clip shows well, from its prompt
    assert visual.rationale_source == "strengths"
    assert parse_answer(visual.target).rationale == make_describer("template")(
        Dimension.VISUAL, [], Clip("a red ball"))
    assert '"a red ball"' in visual.target
    unannotated = by_id["b:dynamic"]  # MOS 3.0 < 4, nothing names the problem
    assert unannotated.rationale_source == "unannotated"
    assert parse_answer(unannotated.target).rationale == no_reason_given(Dimension.DYNAMIC)
    warnings = {(p.kind, p.video_id, p.dimension, p.severity) for p in result.problems}
    assert warnings == {("missing_attribution", "b", "dynamic", "warning"),
                        ("missing_attribution", "b", "alignment", "warning")}


def test_rater_reasons_rating_first_and_system(tmp_path) -> None:
    config = RecordConfig(answer_format="rating-first", system="You rate videos.")
    reasons = {("b", "dynamic"): ["jerky motion", "Frozen"]}  # free text, then a reason code
    result = build_records(_videos(tmp_path), MOS, config, reasons)
    by_id = {r.id: r for r in result.records}
    assert by_id["b:dynamic"].target == "Fair<think>Jerky motion. The video freezes.</think>"
    assert by_id["b:dynamic"].rationale_source == "rater_reasons"
    assert by_id["b:visual"].target.startswith('Excellent<think>The frames of "a blue cube"')
    assert [m["role"] for m in by_id["b:visual"].messages] == ["system", "user", "assistant"]
    assert "Rating<think>Your analysis here</think>" in by_id["b:visual"].messages[1][
        "content"][1]["text"]


def test_missing_mos_unknown_video_and_split_filter(tmp_path) -> None:
    mos = pd.concat([MOS[MOS["dimension"] != "alignment"], _mos([("zz", "visual", 3.0)])])
    result = build_records(_videos(tmp_path), mos, RecordConfig(splits=("train",)))
    assert {r.video_id for r in result.records} == {"a"}
    kinds = {(p.kind, p.video_id, p.dimension) for p in result.problems}
    assert kinds == {("missing_mos", "a", "alignment"), ("unknown_video", "zz", None)}


def test_describer_registry(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown describer 'nothing'; valid: lmm, template"):
        RecordConfig(describer="nothing")
    with pytest.raises(ConfigError, match="writes with a model"):
        build_records(_videos(tmp_path), MOS, RecordConfig(describer="lmm"))
    with pytest.raises(ConfigError, match="takes no model"):
        make_describer("template", object())

    def shout(dimension, reasons, clip):
        return f"{dimension.value}: {len(reasons)} reason(s) about {clip.prompt}"

    result = build_records(_videos(tmp_path), MOS, describer=shout)
    assert parse_answer({r.id: r for r in result.records}["a:visual"].target).rationale == \
        "visual: 0 reason(s) about a red ball"


def test_write_and_load_round_trip(tmp_path) -> None:
    records = build_records(_videos(tmp_path), MOS).records
    path = write_records(records, tmp_path / "out" / "records.jsonl")
    stored = json.loads(path.read_text().splitlines()[0])
    assert stored["video"] == "../clips/a.mp4"  # relative to the records file
    assert stored["messages"][0]["content"][0]["video"] == "../clips/a.mp4"
    loaded = load_records(path)
    assert loaded.errors == []
    assert [r.id for r in loaded.records] == [r.id for r in records]
    assert loaded.records[0].video == str((tmp_path / "clips" / "a.mp4").resolve())
    assert loaded.records[0].messages == build_messages(
        loaded.records[0].video, "a red ball", Dimension.VISUAL, AnswerFormat.THINK_FIRST,
        records[0].target)
    with pytest.raises(AnnotationError, match="does not exist"):
        load_records(path, check_files=True)


def _bad_lines(good: dict) -> list[str]:
    wrong_rating = dict(good, rating="Fair")
    out_of_range = dict(good, mos=5.5)
    bad_target = dict(good, target="Excellent")
    missing = {k: v for k, v in good.items() if k != "messages"}
    wrong_video = json.loads(json.dumps(good))
    wrong_video["messages"][0]["content"][0]["video"] = "other.mp4"
    return [json.dumps(good), "{not json", json.dumps(wrong_rating), json.dumps(out_of_range),
            "", json.dumps(bad_target), json.dumps(missing), json.dumps(wrong_video), "[1, 2]",
            json.dumps(dict(good, mos="4.6")), json.dumps(dict(good, colour="red"))]


def test_loader_reports_bad_lines_with_numbers(tmp_path) -> None:
    records = build_records(_videos(tmp_path), MOS).records
    path = write_records(records[:1], tmp_path / "records.jsonl")
    good = json.loads(path.read_text())
    path.write_text("\n".join(_bad_lines(good)) + "\n")
    with pytest.raises(AnnotationError) as error:
        load_records(path)
    message = str(error.value)
    for line in (2, 3, 4, 6, 7, 8, 9, 10, 11):
        assert f"line {line}:" in message
    assert "line 1:" not in message and "line 5:" not in message
    lenient = load_records(path, lenient=True)
    assert [r.id for r in lenient.records] == ["a:visual"]
    found: dict[int, str] = {}
    for number, message in lenient.errors:  # a line may have several problems
        found[number] = f"{found[number]} | {message}" if number in found else message
    assert "not JSON" in found[2]
    assert "is not R(4.6) = 'Excellent'" in found[3]
    assert "target rates 'Excellent', record rating is 'Fair'" in found[3]
    assert "outside [1, 5]" in found[4]
    assert "no <think>" in found[6]
    assert "missing field 'messages'" in found[7]
    assert "video items ['other.mp4']" in found[8]
    assert found[9].startswith("not a JSON object")
    assert "should be int or float" in found[10]
    assert "unknown field 'colour'" in found[11]
