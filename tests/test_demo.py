"""The `make demo` chain end to end with even smaller settings (about a minute): every stage through the
real scripts, the table and the plot at the end, and a second `make` that has nothing left to do.

In seconds the tiny models learn the answer format and little else: the long model answers hard problems
at about chance (10-15%), the short one, stopped after 20 steps, not even in the format. That is enough for
valid bounds and for the chain to run; the demo's real numbers come from `make demo` (see the README)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import demo

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "DATA_FLAGS": "--system2_seed 2000 --short_seed 500 --s2_problems 16 --dev_problems 64 --test_easy 8 "
                  "--test_hard 16",
    "MODEL_FLAGS": "--hidden 64 --layers 2 --heads 4 --kv_heads 2 --intermediate 128",
    "LONG_FLAGS": "--max_steps=150 --save_interval=150 --global_batch=16 --lr=1e-2 --min_lr=1e-3 --warmup_steps=10",
    "SHORT_FLAGS": "--max_steps=20 --save_interval=20 --global_batch=16 --lr=1e-2 --min_lr=1e-3 --warmup_steps=5",
    "TLDR_FLAGS": "--max_steps=6 --eval_interval=3 --save_interval=3 --global_batch=8",
    "SAMPLES": "2",
    "MAX_NEW": "160",
}


def make(out, *extra):
    # the stage targets directly (`make demo` would also build .venv); PY is the interpreter running the tests
    cmd = ["make", "-j2", "-C", str(ROOT), f"PY={sys.executable}", f"DEMO={out}",  # (-j2: the independent stages
           *(f"{k}={v}" for k, v in SMALL.items()), f"{out}/report.done", *extra]          # at once, a thread each)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_demo_chain_with_small_settings(tmp_path):
    out = tmp_path / "demo"
    p = make(out)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    for f in ["data/system1.jsonl", "data/system2_seed.jsonl", "data/short_seed.jsonl", "data/dev.jsonl",
              "data/test.jsonl", "data/tokenizer/tokenizer.json", "bounds.json", "system2.jsonl",
              "report.md", "report.json", "training.png", "tradeoff.png"]:
        assert (out / f).is_file(), f
    bounds = json.loads((out / "bounds.json").read_text())
    assert bounds["long"]["accuracy"] > bounds["short"]["accuracy"]
    assert bounds["sampling"] == {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 160}
    # what the samples behind the bounds were made with, from their own settings files
    assert {m["sampling"]["temperature"] for m in bounds["made_with"].values()} == {0.7}
    # System-2 data: one shortest correct answer per problem that had one, in train.py's format
    s2 = [json.loads(line) for line in (out / "system2.jsonl").read_text().splitlines()]
    assert s2 and all({"id", "problem", "response"} <= set(r) and "</think>" in r["response"] for r in s2)
    # both fine-tunes evaluated the dev set every 3 steps; TLDR moved its weights, static did not
    for run in ("tldr", "static"):
        lines = (out / run / "metrics.jsonl").read_text().splitlines()
        evals = [json.loads(line) for line in lines if "dev_acc" in line]
        assert [e["step"] for e in evals] == [3, 6]
    weights = [json.loads(line)["w_short"] for line in (out / "tldr" / "metrics.jsonl").read_text().splitlines()
               if "loss" in line]
    assert weights[0] == 0.5 and weights[-1] != 0.5
    # the report (report.py, the same code as the reproduction's): the four models on the test set, by level
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"base", "short", "static", "tldr"} and report["published"] is None
    for arm in report["arms"].values():
        levels = arm["benchmarks"]["test"]["by_level"]
        assert set(levels) == {"easy", "hard"} and all(0 <= x["accuracy"] <= 1 for x in levels.values())
    assert set(report["vs_base"]) == {"short", "static", "tldr"}
    table = (out / "report.md").read_text()
    assert all(name in table for name in ("base model", "short model M_S", "static 1:1 mixture", "| TLDR |"))

    # every stage is a file target: nothing left to do the second time
    again = make(out, "--question")
    assert again.returncode == 0, again.stdout


def test_demo_problems_are_checkable_and_held_out(tmp_path):
    demo.main(["--out_dir", str(tmp_path), "--seed", "3", "--system2_seed", "200", "--short_seed", "200",
               "--s2_problems", "20", "--dev_problems", "20", "--test_easy", "5", "--test_hard", "20"])
    rows = {n: [json.loads(line) for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
            for n in ("system1", "system2_seed", "short_seed", "s2_problems", "dev", "test")}
    for r in rows["dev"] + rows["test"] + rows["s2_problems"]:
        assert str(eval(r["problem"].removeprefix("What is ").removesuffix("?"))) == r["answer"]
    held_out = {r["problem"] for n in ("dev", "test", "s2_problems") for r in rows[n] if r.get("level") == "hard"}
    trained = {r["problem"] for n in ("system2_seed", "short_seed") for r in rows[n]}
    assert held_out and not held_out & trained
    # a long trace ends with the boxed answer after </think>; re-checks vary between traces
    trace = rows["system2_seed"][1]["response"]
    assert trace.rsplit("</think>", 1)[1].strip().startswith("\\boxed{")
    assert len({r["response"].count("verify") + r["response"].count("check") for r in rows["system2_seed"]}) > 1
    tok = json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok["prompt_instruction"] == ""
