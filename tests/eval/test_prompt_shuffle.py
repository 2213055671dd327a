"""The prompt-sensitivity self-test (`qsave prompt-shuffle`): the derangement, the summary's
arithmetic against hand-worked tables, the runner against single scores, the CLI end to end on
real synthetic clips, its error paths, and the shipped tiny-demo model."""

import json
import random
import shutil

import pytest

from qsave.cli import main
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.errors import ConfigError, QsaveError, UsageError
from qsave.eval.prompt_shuffle import (
    PromptShuffleConfig,
    derange_prompts,
    run_prompt_shuffle,
    score_tables,
    summarize,
)
from qsave.evaluator import ScoreItem
from qsave.jsonl import read_jsonl

DEMO = ["--model", "tiny-demo", "--device", "cpu", "--dtype", "float32"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """4 clips of 0.5 s, 3 distinct prompts: syn-00000 and syn-00001 share one."""
    root = tmp_path_factory.mktemp("shuffle-clips")
    write_corpus(root, SynthConfig(n=4, seed=5, seconds=0.5, videos_per_prompt=2))
    return root


def manifest_rows(corpus):
    return [row for _, row in read_jsonl(corpus / "manifest.jsonl").rows]


# --- the derangement ------------------------------------------------------------------------
def test_the_derangement_maps_every_prompt_to_another_one_and_is_seeded():
    rng = random.Random(1)
    for trial in range(200):
        distinct = [f"prompt {i}" for i in range(rng.randint(2, 9))]
        prompts = [rng.choice(distinct) for _ in range(20)] + distinct + [None, ""]
        rng.shuffle(prompts)
        mapping = derange_prompts(prompts, seed=trial)
        assert sorted(mapping) == sorted(distinct)  # None and "" are no prompt
        assert sorted(mapping.values()) == sorted(distinct)  # a permutation of them
        assert all(mapping[p] != p for p in mapping)  # no fixed point
        assert derange_prompts(reversed(prompts), seed=trial) == mapping  # the set and seed only


def test_two_prompts_swap_and_seeds_give_other_derangements():
    assert derange_prompts(["a", "b", "a"], seed=3) == {"a": "b", "b": "a"}
    many = [f"p{i}" for i in range(6)]
    assert len({tuple(derange_prompts(many, seed=s).items()) for s in range(10)}) > 1


@pytest.mark.parametrize("prompts", [[], ["a cube", "a cube", None, ""]])
def test_fewer_than_two_distinct_prompts_is_a_usage_error(prompts):
    with pytest.raises(UsageError, match="at least 2 distinct prompts, got"):
        derange_prompts(prompts, seed=0)


# --- the summary ----------------------------------------------------------------------------
def table(**r_hats):
    """{id: {visual, dynamic, alignment}} from id=(visual, dynamic, alignment)."""
    return {k: dict(zip(("visual", "dynamic", "alignment"), v, strict=True))
            for k, v in r_hats.items()}


OWN = table(a=(0.50, 0.30, 0.90), b=(0.20, 0.60, 0.40), c=(0.70, 0.70, 0.60),
            d=(0.40, 0.10, 0.50))
SHUFFLED = table(a=(0.51, 0.33, 0.40), b=(0.23, 0.58, 0.50), c=(0.70, 0.73, 0.60),
                 d=(0.38, 0.09, 0.30))
# alignment drops 0.5, −0.1, 0, 0.2 → mean 0.15, share 2/4 (0 is no drop);
# visual |Δ| 0.01, 0.03, 0, 0.02 → mean 0.015, max 0.03; dynamic 0.03, 0.02, 0.03, 0.01 → 0.0225


def test_the_summary_of_hand_worked_tables():
    summary = summarize(OWN, SHUFFLED)
    assert summary.n == 4
    assert summary.mean_drop == pytest.approx(0.15) and summary.drop_fraction == 0.5
    assert summary.sign_p == pytest.approx(0.5)  # 2 drops of 3 moves: P(X ≥ 2 | n 3) = 4/8
    assert summary.quality["visual"] == pytest.approx((0.015, 0.03))
    assert summary.quality["dynamic"] == pytest.approx((0.0225, 0.03))
    # checks: drop share, mean drop, visual, dynamic. Half is not more than 0.75; 0.15 is more
    # than 0.05; visual stays under 0.02, dynamic does not
    assert [c.passed for c in summary.checks] == [False, True, True, False]
    assert not summary.passed
    loose = summarize(OWN, SHUFFLED, PromptShuffleConfig(min_drop_fraction=0.49,
                                                         max_quality_change=0.023))
    assert loose.passed
    strict = summarize(OWN, SHUFFLED, PromptShuffleConfig(min_mean_drop=0.15 + 1e-9,
                                                          min_drop_fraction=0.0,
                                                          max_quality_change=1.0))
    assert [c.passed for c in strict.checks] == [True, False, True, True]


def test_the_summary_json_has_the_figures_thresholds_and_verdicts():
    figures = summarize(OWN, SHUFFLED, PromptShuffleConfig(seed=7)).to_json()
    assert figures["n"] == 4 and figures["seed"] == 7 and figures["passed"] is False
    assert figures["thresholds"] == {"min_drop_fraction": 0.75, "min_mean_drop": 0.05,
                                     "max_quality_change": 0.02}
    assert figures["alignment"] == pytest.approx({"mean_drop": 0.15, "drop_fraction": 0.5,
                                                  "sign_test_p": 0.5})
    assert figures["visual"] == pytest.approx({"mean_abs_change": 0.015, "max_abs_change": 0.03})
    assert [c["passed"] for c in figures["checks"]] == [False, True, True, False]
    json.dumps(figures)  # plain JSON values


def test_the_summary_refuses_tables_of_other_videos_or_none():
    with pytest.raises(QsaveError, match="same videos; 1 are in one only"):
        summarize(OWN, {k: v for k, v in SHUFFLED.items() if k != "d"})
    with pytest.raises(QsaveError, match="no video was scored with both prompts"):
        summarize({}, {})


@pytest.mark.parametrize("field,value", [("min_drop_fraction", 1.0), ("min_drop_fraction", -0.1),
                                         ("min_mean_drop", 1.0), ("max_quality_change", 0.0),
                                         ("max_quality_change", float("nan"))])
def test_thresholds_out_of_range_are_refused_with_their_value(field, value):
    with pytest.raises(ConfigError, match=field):
        PromptShuffleConfig(**{field: value})


# --- the runner -----------------------------------------------------------------------------
def test_each_row_pairs_the_scores_of_its_own_and_its_shuffled_prompt(corpus, tiny_evaluator):
    rows_in = manifest_rows(corpus)
    items = [ScoreItem(str(corpus / r["path"]), r["prompt"], r["id"]) for r in rows_in]
    items.append(ScoreItem(str(corpus / rows_in[0]["path"]), None, "no-prompt"))
    mapping = derange_prompts([i.prompt for i in items], seed=0)
    rows = run_prompt_shuffle(tiny_evaluator, items, mapping, batch_size=1)
    assert [r.id for r in rows] == [i.name for i in items]
    assert rows[-1].error.type == "PromptError" and rows[-1].own is None
    for item, row in zip(items[:-1], rows[:-1], strict=True):
        assert row.error is None and row.prompt == item.prompt
        assert row.shuffled_prompt == mapping[item.prompt] != item.prompt
        for prompt, r_hats in ((row.prompt, row.own), (row.shuffled_prompt, row.shuffled)):
            alone = tiny_evaluator.score(item.video, prompt)
            assert r_hats == pytest.approx({d.value: s.score for d, s in alone.scores.items()},
                                           abs=1e-6)
    own, shuffled = score_tables(rows)
    assert sorted(own) == sorted(shuffled) == sorted(r["id"] for r in rows_in)


# --- the command ----------------------------------------------------------------------------
def test_the_command_writes_rows_prints_the_checks_and_exits_by_them(corpus, tmp_path, capsys):
    out, summary_file = tmp_path / "rows.jsonl", tmp_path / "summary.json"
    code = main(["prompt-shuffle", str(corpus / "manifest.jsonl"), "-o", str(out), "--json",
                 str(summary_file), *DEMO])
    printed = capsys.readouterr().out
    summary = json.loads(summary_file.read_text())
    assert code == (0 if summary["passed"] else 1)
    assert "alignment: mean drop of r̂" in printed and "visual: mean |Δr̂|" in printed
    assert ("FAIL" in printed) == (not summary["passed"])
    assert summary["n"] == 4 and summary["failed"] == 0 and summary["seed"] == 0
    assert summary["model"]["id"] == "qsave/tiny-demo"

    rows = [row for _, row in read_jsonl(out).rows]
    manifest = manifest_rows(corpus)
    assert [r["id"] for r in rows] == [m["id"] for m in manifest]
    assert [r["prompt"] for r in rows] == [m["prompt"] for m in manifest]
    prompts = {m["prompt"] for m in manifest}
    for row in rows:
        assert row["shuffled_prompt"] in prompts and row["shuffled_prompt"] != row["prompt"]
        for r_hats in (row["own"], row["shuffled"]):
            assert set(r_hats) == {"visual", "dynamic", "alignment"}
            assert all(0.0 <= v <= 1.0 for v in r_hats.values())
    assert rows[0]["shuffled_prompt"] == rows[1]["shuffled_prompt"]  # one prompt, one other
    recomputed = summarize({r["id"]: r["own"] for r in rows},
                           {r["id"]: r["shuffled"] for r in rows}).to_json()
    assert recomputed["checks"] == summary["checks"]  # the figures are the rows' figures

    # the thresholds are the flags: a quality bound no moving score meets fails the run
    assert summary["visual"]["mean_abs_change"] > 1e-9  # the prompt is in the visual context
    strict = tmp_path / "rows.json"
    assert main(["prompt-shuffle", str(corpus / "manifest.jsonl"), "-o", str(strict),
                 "--max-quality-change", "1e-9", "--seed", "1", *DEMO]) == 1
    assert "< 1e-09" in capsys.readouterr().out
    assert [r["id"] for r in json.loads(strict.read_text())] == [m["id"] for m in manifest]


def test_a_video_without_a_prompt_or_that_fails_is_its_rows_error(corpus, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    manifest = manifest_rows(corpus)
    for name, row in zip("abc", manifest, strict=False):
        shutil.copy(corpus / row["path"], folder / f"{name}.mp4")
    (folder / "d.mp4").write_bytes(b"not a video")
    prompts = tmp_path / "prompts.json"  # c has none
    prompts.write_text(json.dumps({"a": "a red cube", "b": "a blue ball", "d": "a red cube"}))
    out = tmp_path / "rows.jsonl"
    assert main(["prompt-shuffle", str(folder), "--prompts", str(prompts), "-o", str(out),
                 "--json", str(tmp_path / "s.json"), *DEMO]) == 1
    printed = capsys.readouterr()
    rows = {row["id"]: row for _, row in read_jsonl(out).rows}
    assert rows["c"]["error"]["type"] == "PromptError" and rows["c"]["own"] is None
    assert rows["d"]["error"]["type"] == "VideoError" and rows["d"]["shuffled"] is None
    assert rows["a"]["shuffled_prompt"] == "a blue ball" and rows["a"]["error"] is None
    assert f"failed: {folder / 'c.mp4'}: PromptError" in printed.err
    assert f"failed: {folder / 'd.mp4'}: VideoError" in printed.err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n"] == 2 and summary["failed"] == 2  # left out of the figures


@pytest.mark.parametrize("args,message", [
    (["--prompt", "a cube"], "at least 2 distinct prompts, got 1"),
    ([], "at least 2 distinct prompts, got 0"),
    (["--min-drop-fraction", "1.5"], "min_drop_fraction (1.5) must be in [0, 1)"),
    (["--batch-size", "0"], "--batch-size (0) must be at least 1"),
])
def test_usage_errors_exit_2_before_the_model_loads(corpus, tmp_path, capsys, args, message):
    out = tmp_path / "rows.jsonl"
    assert main(["prompt-shuffle", str(corpus / "clips"), "-o", str(out), *args, *DEMO]) == 2
    printed = capsys.readouterr()
    assert message in printed.err and printed.err.count("error:") == 1
    assert "scorer settings" not in printed.out and not out.exists()


def test_the_rows_never_replace_an_input(corpus, capsys):
    manifest = corpus / "manifest.jsonl"
    before = manifest.read_bytes()
    assert main(["prompt-shuffle", str(manifest), "-o", str(manifest), *DEMO]) == 2
    assert "is an input of this run" in capsys.readouterr().err
    assert manifest.read_bytes() == before


# --- the shipped model ----------------------------------------------------------------------
@pytest.fixture
def shipped_summary():
    """The self-test on the shipped tiny-demo over its held-out clips (each scored twice)."""
    from qsave.demo import shipped_held_out_dir
    from qsave.evaluator import Evaluator
    from qsave.model.load import read_provenance
    from qsave.sources import items_from
    from qsave.spec import shipped_tiny_demo_dir

    items = items_from(shipped_held_out_dir() / "manifest.jsonl")
    evaluator = Evaluator.from_pretrained("tiny-demo", device="cpu", dtype="float32")
    config = PromptShuffleConfig()
    rows = run_prompt_shuffle(evaluator, items, derange_prompts((i.prompt for i in items),
                                                                config.seed))
    assert not [row.error for row in rows if row.error is not None]
    summary = summarize(*score_tables(rows), config)
    print(json.dumps(summary.to_json(), indent=1))
    assert summary.n == len(items) == read_provenance(shipped_tiny_demo_dir())["held_out"]["n"]
    return summary


@pytest.mark.slow  # the held-out clips, each scored twice (~1 min on 2 CPU cores)
@pytest.mark.xfail(reason="the shipped tiny model has not learnt alignment (issue 20)",
                   strict=True)  # passing means a prompt-sensitive model ships: un-mark it
def test_shipped_model_is_prompt_sensitive(shipped_summary):
    """Alignment drops under another clip's prompt; visual and dynamic do not move."""
    assert shipped_summary.passed, [c for c in shipped_summary.checks if not c.passed]
