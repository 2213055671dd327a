"""Every truth table qsave writes, through the real CLI: `qsave data synth` → `data mos` /
`data split` → `qsave score --model tiny` → `qsave eval` (docs/eval.md).

The synthetic corpus gives each clip its own prompt; in the module's corpus, clips of one split
share a prompt three by three, so that pairs can be built from MOS within a prompt.
"""

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from qsave.cli import main
from qsave.eval.benchmarks import MOS_PAIR_RULE
from qsave.eval.report import EvalConfig

DIMENSIONS = ("visual", "dynamic", "alignment", "overall")
PER_PROMPT = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 synthetic clips scored once from the manifest (every dimension, prompts in the rows)
    and once as a folder (visual only, no prompts), with the MOS and split tables."""
    root = tmp_path_factory.mktemp("truth-formats")
    data = root / "corpus"
    assert main(["data", "synth", "-o", str(data), "--count", "24"]) == 0
    manifest = data / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for split in {row["split"] for row in rows}:  # a prompt never spans two splits
        clips = [row for row in rows if row["split"] == split]
        for k, row in enumerate(clips):
            row["prompt"] = clips[k - k % PER_PROMPT]["prompt"]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for suffix in ("csv", "jsonl", "parquet"):
        assert main(["data", "mos", "--ratings", str(data / "ratings.csv"),
                     "-o", str(root / f"mos.{suffix}")]) == 0
    assert main(["data", "split", "--videos", str(manifest), "-o", str(root / "split.csv")]) == 0
    assert main(["score", str(manifest), "--model", "tiny", "-q",
                 "-o", str(root / "pred.jsonl")]) == 0
    assert main(["score", str(data), "--model", "tiny", "-q", "--dimensions", "visual",
                 "-o", str(root / "pred_folder.jsonl")]) == 0
    return root


def _eval(corpus: Path, truth: Path, *flags: str, pred: str = "pred.jsonl") -> tuple[int, dict]:
    out = corpus / "report.json"
    out.unlink(missing_ok=True)
    code = main(["eval", "--pred", str(corpus / pred), "--truth", str(truth), "--bootstrap", "0",
                 "--json", str(out), *flags])
    return code, json.loads(out.read_text()) if out.exists() else {}


@pytest.mark.parametrize("name, layout", [
    ("mos.csv", "MOS table"), ("mos.jsonl", "MOS table"), ("mos.parquet", "MOS table"),
    ("split.csv", "videos table"), ("corpus/manifest.jsonl", "videos table"),
])
def test_every_table_qsave_writes_is_accepted_as_truth(corpus, name, layout):
    code, report = _eval(corpus, corpus / name)
    assert code == 0
    assert f"truth layout: {layout}" in report["notes"]
    assert report["missing"] == {} and report["unmatched_predictions"]["count"] == 0
    assert all(report["correlation"][d]["instance"]["n"] == 24 for d in DIMENSIONS)
    if layout == "MOS table":  # the MOS read is the table's mos5, matched by video_id
        mos = pd.read_csv(corpus / "mos.csv")
        rows = [json.loads(line) for line in (corpus / "pred.jsonl").read_text().splitlines()]
        r_hat = {row["id"]: row["scores"]["visual"]["score"] for row in rows}
        visual = mos[mos["dimension"] == "visual"]
        expected = stats.spearmanr([r_hat[v] for v in visual["video_id"]], visual["mos5"])
        assert report["correlation"]["visual"]["instance"]["srcc"] == pytest.approx(
            expected.statistic)


def _prompts(corpus: Path) -> list[list[str]]:
    """The ids of each prompt of the manifest, in id order."""
    prompts: dict[str, list[str]] = {}
    for line in (corpus / "corpus" / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        prompts.setdefault(row["prompt"], []).append(row["id"])
    return [sorted(ids) for ids in prompts.values()]


def _expected_ties(corpus: Path, dimension: str, margin: float) -> int:
    """Human ties of the pairs from mos.csv, recomputed: neighbours in id order per prompt."""
    mos = pd.read_csv(corpus / "mos.csv")
    rows = mos[mos["dimension"] == dimension]
    values = dict(zip(rows["video_id"], rows["mos5"], strict=True))
    return sum(abs(values[a] - values[b]) <= margin for ids in _prompts(corpus)
               for a, b in itertools.pairwise(ids))


@pytest.mark.parametrize("name, source", [("mos.csv", "prompts_from_predictions"),
                                          ("split.csv", "prompts_from_truth")])
def test_pairs_from_mos_are_reported_with_both_protocols_and_the_rule(corpus, name, source,
                                                                      capsys):
    html = corpus / "report.html"
    code, report = _eval(corpus, corpus / name, "--html", str(html))
    assert code == 0
    about = report["mos_pairs"]
    margin = EvalConfig().tie_margin
    assert about["rule"] == MOS_PAIR_RULE and about["tie_margin"] == margin == 0.2
    assert about[source] == 24 and about["videos_without_prompt"] == 0 and not about["reason"]
    prompts = _prompts(corpus)
    assert about["prompts"] == len(prompts) and len(prompts) < 24
    assert about["prompts_with_pairs"] == sum(len(ids) > 1 for ids in prompts)
    n_pairs = sum(len(ids) - 1 for ids in prompts)  # k videos of a prompt: k − 1 pairs
    for dimension in DIMENSIONS:
        entry = report["preference"][dimension]
        assert entry["n_pairs"] == about["pairs"][dimension] == n_pairs
        assert 0 <= entry["accuracy_with_ties"] <= 1 and 0 <= entry["accuracy_without_ties"] <= 1
        assert entry["n_human_ties"] == about["human_ties"].get(dimension, 0)
        if name == "mos.csv":
            assert entry["n_human_ties"] == _expected_ties(corpus, dimension, margin)
    terminal = capsys.readouterr().out
    assert "pairs        built from MOS" in terminal and MOS_PAIR_RULE in terminal
    assert "m = 0.2 on MOS (1–5)" in terminal and "w/ ties" in terminal and "w/o ties" in terminal
    page = html.read_text()
    assert "<th>pairs</th>" in page and MOS_PAIR_RULE in page and "m = 0.2 on MOS" in page


def test_the_tie_margin_flag_changes_the_human_ties(corpus):
    code, report = _eval(corpus, corpus / "mos.csv", "--tie-margin", "0.5")
    assert code == 0 and report["mos_pairs"]["tie_margin_source"] == "set by the user"
    assert report["config"]["tie_margin"] == 0.5
    for dimension in DIMENSIONS:
        assert report["preference"][dimension]["n_human_ties"] == _expected_ties(
            corpus, dimension, 0.5)


def test_folder_ids_match_and_no_prompt_is_said(corpus, capsys):
    # `qsave score corpus` ids are clips/syn-…; mos.csv's are syn-…; the rows have no prompt
    mos = pd.read_csv(corpus / "mos.csv")
    visual = corpus / "mos_visual.csv"
    mos[mos["dimension"] == "visual"].to_csv(visual, index=False)
    code, report = _eval(corpus, visual, pred="pred_folder.jsonl")
    assert code == 0 and report["correlation"]["visual"]["instance"]["n"] == 24
    assert report["preference"] == {}
    assert report["mos_pairs"]["reason"].startswith("no video has a prompt")
    assert "pairs        none built from MOS: no video has a prompt" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["corpus/ratings.csv", "pred.jsonl"])  # ratings; swapped files
def test_a_table_of_no_accepted_layout_is_refused_clearly(corpus, name, capsys):
    code, report = _eval(corpus, corpus / name)
    error = capsys.readouterr().err
    assert code == 1 and not report
    assert "matches no truth layout" in error and "columns found: " in error
    assert "(1) MOS table: video_id, dimension, mos" in error
    assert "(2) videos table: id or video_id" in error and "mos_<dimension>" in error
    if name.endswith("ratings.csv"):
        assert "video_id, rater_id, dimension, score" in error and "qsave data mos" in error


def test_split_of_a_table_without_a_split_column_is_refused(corpus, capsys):
    code, _ = _eval(corpus, corpus / "mos.csv", "--split", "test")
    assert code == 1 and "--split test: mos.csv has no split column" in capsys.readouterr().err


def test_id_errors_show_ids_of_both_sides_and_how_they_match(corpus, capsys):
    mos = pd.read_csv(corpus / "mos.csv")
    other = corpus / "mos_other.csv"
    mos.assign(video_id=mos["video_id"].str.replace("syn-", "vid-")).to_csv(other, index=False)
    code, _ = _eval(corpus, other)
    error = capsys.readouterr().err
    assert code == 1 and "no prediction id matches any of the 24 qsave videos" in error
    assert "truth ids e.g. vid-00000" in error and "prediction ids e.g. syn-00000" in error
    assert "the path's last two parts, the file name and its stem" in error

    half = corpus / "mos_half.csv"
    mos[mos["video_id"] < "syn-00012"].to_csv(half, index=False)
    code, _ = _eval(corpus, half)
    error = capsys.readouterr().err
    assert code == 1 and "12 prediction ids match no qsave video" in error
    assert "prediction ids e.g. syn-00012" in error and "--allow-extra" in error


def test_data_mos_with_videos_carries_split_generator_and_prompt(corpus):
    """`data mos --videos`: the MOS table alone selects a split, groups generators (model
    level) and builds pairs within prompts — the truth of docs/train-your-own.md."""
    data, table = corpus / "corpus", corpus / "mos_videos.csv"
    assert main(["data", "mos", "--ratings", str(data / "ratings.csv"), "--videos",
                 str(data / "manifest.jsonl"), "-o", str(table)]) == 0
    mos = pd.read_csv(table)
    manifest = {row["id"]: row for row in map(json.loads, (data / "manifest.jsonl").open())}
    for column in ("split", "generator", "prompt"):
        assert mos[column].tolist() == [manifest[v][column] for v in mos["video_id"]]
    code, report = _eval(corpus, table, "--split", "train")
    assert code == 0
    n_train = sum(row["split"] == "train" for row in manifest.values())
    assert report["correlation"]["visual"]["instance"]["n"] == n_train
    assert report["correlation"]["visual"]["model"]["n_generators"] >= 3
    assert report["mos_pairs"]["prompts_from_truth"] == n_train
    assert report["preference"]["visual"]["n_pairs"] > 0
