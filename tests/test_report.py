"""report.py: one report for the demo and the reproduction; report.md and report.json hold the same numbers; a
run without the static arm still reports; the published numbers come from data/published.json."""
import json
import re
from pathlib import Path

import pytest

import report

BENCHES = ("gsm8k", "math500", "aime24", "amc23")


def fake_run(root: Path, arms=("base", "tldr", "static"), long_model="models/DeepSeek-R1-Distill-Qwen-7B"):
    """A run folder as the Makefile lays it out, with made-up numbers."""
    for k, arm in enumerate(arms):
        benchmarks = {b: {"accuracy": 0.5 + 0.1 * i - 0.01 * k, "accuracy_paper": 0.52 + 0.1 * i,
                          "tokens": 1000.0 * (i + 1) * (1 - 0.2 * k)} for i, b in enumerate(BENCHES)}
        (root / "eval" / arm).mkdir(parents=True)
        protocol = "deepseek" if arm == "static" else "tldr-paper"
        for i, b in enumerate(BENCHES):
            benchmarks[b].update(accuracy_se=0.01 * (i + 1), tokens_median=900.0 * (i + 1), tokens_p90=1800.0 * (i + 1),
                                 cut_at_limit=0.05 * i)
        prompt = "{problem}\nPlease reason." if arm == "static" else "Return \\boxed{{}}. {problem}"
        prompts = {b: prompt for b in BENCHES}
        (root / "eval" / arm / "summary.json").write_text(json.dumps({
            "model": f"m/{arm}", "settings": {"protocol": protocol, "temperature": 0.7, "top_p": 1.0, "seed": 0,
                                              "max_new_tokens": 8192, "prompts": prompts,
                                              "samples": {b: 8 if b.startswith("a") else 1 for b in BENCHES}},
            "benchmarks": benchmarks}))
    for arm in arms:
        if arm in ("tldr", "static"):
            (root / arm).mkdir()
            metrics = [{"step": s, "loss": 1.0, "w_short": 0.5 if arm == "static" else 0.5 + 0.1 * s} for s in (1, 2)]
            metrics.append({"step": 2, "dev_tokens": 900.0, "dev_acc": 0.6, "saved": True})
            (root / arm / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
            (root / arm / "chosen.json").write_text(json.dumps({"step": 2, "dev_tokens": 900.0, "dev_acc": 0.6,
                                                                "checkpoint": str(root / arm / "step_000002")}))
    bounds = {"short": {"tokens": 300, "accuracy": 0.3}, "long": {"tokens": 1500, "accuracy": 0.75},
              "long_model": long_model}
    (root / "bounds.json").write_text(json.dumps(bounds))
    return root


def test_report_md_and_json_hold_the_same_numbers(tmp_path):
    run = fake_run(tmp_path / "run")
    written = report.main([str(run)])
    saved = json.loads((run / "report.json").read_text())
    assert saved == json.loads(json.dumps(written))
    assert {f.name for f in run.iterdir()} >= {"report.md", "report.json", "training.png", "tradeoff.png"}
    md = (run / "report.md").read_text()
    rows = {(r[0], r[1]): r for r in ([c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
                                     if line.startswith("| ") and line.count("|") == 8)}
    for key, arm in saved["arms"].items():
        for b, m in arm["benchmarks"].items():
            row = rows[(report.TITLES[b], arm["label"])]
            assert row[2] == f"{100 * m['accuracy']:.1f} ({100 * m['accuracy_paper']:.1f})"
            assert row[3] == f"{m['tokens']:.0f}"
            change = saved["vs_base"].get(key, {}).get("benchmarks", {}).get(b)
            if change:
                assert row[4] == f"{100 * change['accuracy_change'] + 0.0:+.1f}"
                assert row[5] == f"{-100 * change['token_reduction'] + 0.0:+.1f}%"
            pub = saved["published"]["arms"].get(key, {}).get(b)
            assert row[6] == (f"{100 * pub['accuracy']:.1f} / {pub['tokens']:.0f}" if pub else "-")
    for key, change in saved["vs_base"].items():  # the headline: the mean change over the benchmarks
        assert f"{100 * change['mean']['token_reduction']:.1f}% fewer output tokens" in md
        assert f"accuracy {100 * change['mean']['accuracy_change'] + 0.0:+.1f} points" in md
    # the published numbers of the 7B (the size in the long model's name), from data/published.json
    assert saved["published"]["size"] == "7b" and saved["published"]["arms"]["tldr"]["gsm8k"] == \
        {"accuracy": 0.877, "tokens": 254}
    assert "about 40% fewer output tokens" in md


def test_the_report_says_which_prompt_each_model_used(tmp_path):
    run = fake_run(tmp_path / "run")
    report.main([str(run)])
    md = (run / "report.md").read_text()
    protocol = ("protocol {}: temperature 0.7, top_p 1.0, up to 8192 new tokens, samples per problem GSM8K 1, "
                "MATH500 1, AIME24 8, AMC23 8, seed 0; the user turn:")
    assert f"base model, TLDR: {protocol.format('tldr-paper')}\n- GSM8K: `Return \\boxed{{}}. {{problem}}`" in md
    assert f"static 1:1 mixture: {protocol.format('deepseek')}\n- GSM8K: `{{problem}}\\nPlease reason.`" in md
    assert json.loads((run / "report.json").read_text())["arms"]["static"]["protocol"]["protocol"] == "deepseek"


def test_the_report_holds_the_length_statistics_and_the_baselines(tmp_path, monkeypatch):
    """Every model (base, TLDR, static, and the rivals' released checkpoints of make baselines) with the accuracy's
    standard error, the median and 90th percentile of its output tokens and its share cut at the cap; the
    baselines in data/baselines.json's order, labelled, in the table and in tradeoff.png."""
    run = fake_run(tmp_path / "run")
    listed = tmp_path / "baselines.json"
    listed.write_text(json.dumps({"baselines": [{"name": "RivalA"}, {"name": "RivalB"}, {"name": "NotRun"}]}))
    monkeypatch.setattr(report, "BASELINES", listed)
    for k, name in enumerate(("RivalB", "RivalA")):
        (run / "eval" / f"baseline-{name}").mkdir(parents=True)
        summary = json.loads((run / "eval" / "tldr" / "summary.json").read_text())
        summary["model"] = f"hub/{name}"
        for m in summary["benchmarks"].values():
            m["tokens"] *= 0.5 + 0.1 * k
        (run / "eval" / f"baseline-{name}" / "summary.json").write_text(json.dumps(summary))
    written = report.main([str(run)])
    assert list(written["arms"]) == ["base", "tldr", "static", "baseline-RivalA", "baseline-RivalB"]
    assert written["arms"]["baseline-RivalA"]["label"] == "RivalA" and "baseline-RivalA" in written["vs_base"]
    md = (run / "report.md").read_text()
    assert "| AIME24 | RivalA | 69.0 ± 3.0 | 1440 / 2700 / 5400 | 10.0% |" in md  # from fake_run's numbers
    assert "| GSM8K | base model | 50.0 ± 1.0 | 1000 / 900 / 1800 | 0.0% |" in md
    assert "**RivalB**:" in md and (run / "tradeoff.png").stat().st_size > 1000


def test_a_run_without_the_static_arm_still_reports(tmp_path):
    run = fake_run(tmp_path / "run", arms=("base", "tldr"), long_model="out/tiny/models/long")
    saved = report.main([str(run)])
    assert set(saved["arms"]) == {"base", "tldr"} and saved["published"] is None
    md = (run / "report.md").read_text()
    assert "static 1:1 mixture" in md and re.search(r"no static 1:1 mixture: .*eval/static/summary.json", md)
    assert (run / "training.png").is_file() and (run / "tradeoff.png").is_file()


def test_a_run_with_only_its_base_model(tmp_path):
    run = fake_run(tmp_path / "run", arms=("base",))
    saved = report.main([str(run), "--published", "14b"])
    assert saved["vs_base"] == {} and set(saved["published"]["arms"]) == {"tldr"}
    assert "no TLDR training run" in (run / "report.md").read_text()


def test_published_none_leaves_the_papers_numbers_out(tmp_path):
    run = fake_run(tmp_path / "run")  # a 7B long model: auto would add the paper's 7B numbers
    assert report.main([str(run)])["published"]["size"] == "7b"
    assert report.main([str(run), "--published", "none"])["published"] is None


@pytest.mark.parametrize("name, text, message", [
    ("tldr/metrics.jsonl", '{"step": 1, "loss": 1.0}\n{"step": 2, "lo', "tldr/metrics.jsonl:2: not valid JSON"),
    ("eval/base/summary.json", '{"model": "m",\n "bench', "eval/base/summary.json:2: not valid JSON"),
])
def test_a_damaged_file_of_the_run_is_named_and_nothing_is_written(tmp_path, name, text, message):
    run = fake_run(tmp_path / "run")
    (run / name).write_text(text)
    with pytest.raises(SystemExit, match=re.escape(message)):
        report.main([str(run)])
    assert not (run / "report.md").exists() and not (run / "report.json").exists()


def test_a_folder_with_nothing_to_report_is_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="holds nothing to report: no evaluation"):
        report.main([str(tmp_path / "run")])
    assert list((tmp_path / "run").iterdir()) == []


def test_the_report_says_which_data_each_run_trained_on_and_counts_both_sets(tmp_path, tiny_models):
    """A run holding the paper's data (official/) and built data: each set's examples and response lengths in the
    long model's tokenizer, and which arm trained on which."""
    run = fake_run(tmp_path / "run")
    sets = {"official": ["a" * 10, "b" * 20, "c" * 30], "built": ["d" * 5, "e" * 7]}
    files = {"official": run / "official" / "system1.jsonl", "built": run / "system1.jsonl"}
    files["official"].parent.mkdir()
    for name, responses in sets.items():
        source = {"source": "zzli2022/TLDR@40f7a16:data/data_repo/7b_train/gsm8k_7b_shortcot.json"} \
            if name == "official" else {}
        files[name].write_text("".join(json.dumps({"id": i, "problem": "p", "response": r, **source}) + "\n"
                                       for i, r in enumerate(responses)))
    for arm, name in (("tldr", "official"), ("static", "built")):
        (run / arm / "step_000002" / "train_state").mkdir(parents=True)
        (run / arm / "step_000002" / "train_state" / "state.json").write_text(json.dumps(
            {"config": {"model": str(tiny_models["qwen2"])},
             "data": {"system1": {"path": str(files[name]), "sha256": "0" * 64}}}))
    written = report.main([str(run)])
    by_file = {d["file"]: d for d in written["data"]}
    official, built = by_file[str(files["official"].resolve())], by_file[str(files["built"].resolve())]
    # the byte-level tokenizer: one token per character
    assert (official["data"], official["examples"], official["tokens"], official["tokens_median"]) == \
        ("official", 3, 20.0, 20.0)
    assert (built["data"], built["examples"], built["tokens"], built["trained_by"]) == ("built", 2, 6.0, ["static"])
    assert official["tokens_p90"] == pytest.approx(28.0) and official["trained_by"] == ["tldr"]
    md = (run / "report.md").read_text()
    assert "- TLDR: trained on the official data; 1 dev evaluations" in md
    assert f"| official | {files['official'].resolve()} | 3 | 20 / 20 / 28 | TLDR |" in md
    assert f"| built | {files['built'].resolve()} | 2 | 6 / 6 / 7 | static 1:1 mixture |" in md


def test_every_rival_is_listed_with_the_line_that_names_it():
    """data/baselines.json: each released rival with its base model and the source line naming its id (a README's,
    else its model card's); the ones left out say why."""
    listed = json.loads(report.BASELINES.read_text())
    names = [b["name"] for b in listed["baselines"]]
    assert len(set(names)) == len(names) and all(n.replace("-", "").replace(".", "").isalnum() for n in names)
    for b in listed["baselines"]:
        assert b["repo"].count("/") == 1 and b["base"] and b["line"], b
        assert b["repo"] in b["line"] or b["repo"] in b["source"], b  # the line names the id, or the page is its own
        assert re.search(r"@[0-9a-f]{7} README\.md:\d+|model card", b["source"]), b
    assert {"THU-KEG/AdaptThink-7B-delta0.05", "hkust-nlp/Laser-DE-L4096-7B", "hkust-nlp/Laser-D-L4096-7B",
            "JingyangYi/SB_DS7B_alpha_2", "Zigeng/R1-VeriThinker-7B", "nvidia/DLER-R1-7B-Research"} == \
        {b["repo"] for b in listed["baselines"]}
    assert all(x["why"] for x in listed["left_out"])
