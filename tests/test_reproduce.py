"""`make reproduce-tiny`: the recipe's chain (prepare -> dev -> System-1 / System-2 -> bounds -> torchrun TLDR and
static -> evaluations -> the report) with tiny Qwen2 stand-ins and slices of the shared benchmark files, then
the failure paths: a second make does nothing, a half-written stage output is redone, a missing model stops
with the download hint."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make(tiny, *args):
    # -j2: the stages that do not wait on each other (the two stand-ins, the data and the base model's
    # evaluation, the two arms) run at once, a thread each, on the two cores
    return subprocess.run(["make", "-j2", "-C", str(ROOT), f"PY={sys.executable}", f"TINY={tiny}", *args],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_reproduce_tiny(shared_data, tmp_path):
    tiny = tmp_path / "tiny"
    p = make(tiny, f"TINY_SOURCE={shared_data}", "tiny-chain")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    run = tiny / "run"

    # every stage's output, in its documented schema
    assert len(rows(tiny / "bench" / "s1k.jsonl")) == 12
    dev = rows(run / "dev.jsonl")  # the official dev set: the first problems of AIME 1983-2023 in file order
    assert dev == rows(tiny / "bench" / "aime_1983_2023.jsonl")[:16]
    for name in ("system1", "system2"):
        data = rows(run / f"{name}.jsonl")
        assert data and all({"id", "problem", "response"} <= set(r) and "</think>" in r["response"] for r in data)
    # the long stand-in knows 2 problems in 3 of s1K: the others are counted as without a correct answer
    assert "problems had no correct answer and are left out" in p.stdout
    assert 0 < len(rows(run / "system2.jsonl")) < 12
    bounds = json.loads((run / "bounds.json").read_text())
    assert bounds["long"]["accuracy"] > bounds["short"]["accuracy"] and bounds["problems"] == 16
    assert bounds["sampling"] == {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 128}
    chosen = json.loads((run / "tldr" / "chosen.json").read_text())
    assert chosen["dev_acc"] > 0.7 * bounds["long"]["accuracy"] and Path(chosen["checkpoint"]).is_dir()
    assert (Path(chosen["checkpoint"]) / "model.safetensors").is_file()
    state = json.loads((Path(chosen["checkpoint"]) / "train_state" / "state.json").read_text())
    assert (state["config"]["loss_norm"], state["config"]["global_batch"]) == ("sequence", 8)  # the 7B recipe's
    summary = json.loads((run / "eval" / "tldr" / "summary.json").read_text())
    assert set(summary["benchmarks"]) == {"gsm8k", "math500", "aime24", "amc23"}
    import evaluate
    assert summary["settings"]["prompts"] == evaluate.SKYTHOUGHT_PROMPTS  # the paper's prompts
    assert set(summary["compare"]["benchmarks"]) == {"gsm8k", "math500", "aime24", "amc23"}
    assert summary["benchmarks"]["aime24"]["samples"] == 8  # the paper's protocol
    table = (run / "eval" / "tldr" / "summary.md").read_text()
    assert "(baseline)" in table and "| change |" in table and "tokens" in table
    # the static 1:1 arm as the paper ran it: constant weights, 1% warm-up (1 of 4 steps) then linear decay to 0,
    # no dev evaluation, the final checkpoint evaluated; and the report of the three, beside the paper's 7B
    static = rows(run / "static" / "metrics.jsonl")
    assert {m["w_short"] for m in static} == {0.5} and not any("dev_acc" in m for m in static)
    assert [m["lr"] for m in static] == pytest.approx([0.0, 1e-5, 1e-5 * 2 / 3, 1e-5 / 3])
    static_summary = json.loads((run / "eval" / "static" / "summary.json").read_text())
    assert static_summary["model"] == str(run / "static" / "step_000004")
    report = json.loads((run / "report.json").read_text())
    assert set(report["arms"]) == {"base", "tldr", "static"} and set(report["training"]) == {"tldr", "static"}
    assert set(report["vs_base"]["static"]["benchmarks"]) == {"gsm8k", "math500", "aime24", "amc23"}
    assert report["published"]["size"] == "7b" and not report["notes"]
    assert all((run / f).stat().st_size > 1000 for f in ("report.md", "training.png", "tradeoff.png"))

    # make baselines, a copy of the tiny short stand-in playing the released rival checkpoint: measured with the
    # base model's protocol, a labelled row with the length statistics and a point in tradeoff.png
    p = make(tiny, f"TINY_SOURCE={shared_data}", "tiny-baselines", "BASELINES=AdaptThink-7B")  # one of them
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    report = json.loads((run / "report.json").read_text())
    assert list(report["arms"]) == ["base", "tldr", "static", "baseline-AdaptThink-7B"]
    rival, base = report["arms"]["baseline-AdaptThink-7B"], report["arms"]["base"]
    assert rival["protocol"] == base["protocol"] and rival["protocol"]["samples"]["aime24"] == 8
    assert all(m["tokens_median"] is not None and m["tokens_p90"] >= m["tokens_median"] and 0 <= m["cut_at_limit"] <= 1
               for m in rival["benchmarks"].values())
    assert "| AdaptThink-7B |" in (run / "report.md").read_text()

    # a second run skips every stage: no script runs
    again = make(tiny, f"TINY_SOURCE={shared_data}", "tiny-chain")
    scripts = ("tiny.py", "build.py", "train.py", "evaluate.py", "report.py")
    assert again.returncode == 0 and not any(s in again.stdout for s in scripts)

    # a stage output half-written by a killed run is a temp file, never the target: the stage reruns
    dev_bytes = (run / "dev.jsonl").read_bytes()
    (run / "dev.jsonl").unlink()
    (run / ".dev.jsonl.tmp123").write_text('{"id": "aime-dev-0", "prob')
    p = make(tiny, f"RUN={run}", f"BENCH_DIR={tiny}/bench", "DEV_SIZE=16", f"{run}/dev.jsonl")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert (run / "dev.jsonl").read_bytes() == dev_bytes


def test_missing_model_directory_stops_with_the_download_hint(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "s1k.jsonl").write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    p = subprocess.run(["make", "-C", str(ROOT), f"PY={sys.executable}", f"RUN={tmp_path}/run",
                        f"BENCH_DIR={tmp_path}/bench", f"MODEL_DIR={tmp_path}/models", f"{tmp_path}/run/system2.jsonl"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"{tmp_path}/models/DeepSeek-R1-Distill-Qwen-7B is not a model directory" in p.stdout + p.stderr
    assert "huggingface-cli download" in p.stdout + p.stderr
    assert not (tmp_path / "run" / "system2.jsonl").exists()
