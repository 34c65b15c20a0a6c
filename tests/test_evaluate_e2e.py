"""evaluate.py end to end: a tiny random model answers two benchmarks; summary, table, resume, compare."""
import json
import subprocess
import sys

import pytest

import evaluate as E


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def bench_dir(tmp_path):
    """Benchmark files of our schema, made here, so the test runs in a clone without ../shared."""
    d = tmp_path / "bench"
    d.mkdir()
    rows = {"gsm8k": [{"id": f"gsm8k-{i}", "problem": f"Tom has {i} apples and buys 3 more. How many?",
                       "answer": str(i + 3)} for i in range(4)],
            "math500": [{"id": f"math500-{i}", "problem": f"Compute $\\frac{{{i}}}{{2}}$.",
                         "answer": f"\\frac{{{i}}}{{2}}",
                         "level": i % 5 + 1} for i in range(4)]}
    for bench, rs in rows.items():
        (d / E.BENCHMARKS[bench]).write_text("".join(json.dumps(r) + "\n" for r in rs))
    return d


def test_evaluate_end_to_end(tiny_models, bench_dir, tmp_path):
    model, out = tiny_models["qwen2"], tmp_path / "eval"
    args = ["--model", str(model), "--bench", "gsm8k,math500", "--data_dir", str(bench_dir), "--limit", "3",
            "--samples", "2", "--max_new_tokens", "8", "--batch_size", "4", "--out_dir", str(out)]
    summary = E.main(args)

    saved = json.loads((out / "summary.json").read_text())
    prompts = {"gsm8k": E.SKYTHOUGHT_PROMPTS["gsm8k"],
               "math500": "Return your final response within \\boxed{{}}. {problem}"}
    assert saved == summary and saved["settings"] == {"protocol": "tldr-paper", "temperature": 0.7, "top_p": 1.0,
                                                      "max_new_tokens": 8, "seed": 0, "prompts": prompts,
                                                      "samples": {"gsm8k": 2, "math500": 2}}
    for bench in ["gsm8k", "math500"]:
        m = saved["benchmarks"][bench]
        assert (m["problems"], m["samples"], m["responses"], m["missing"]) == (3, 2, 6, 0)
        assert 0 <= m["accuracy"] <= m["pass@k"]["2"] <= 1 and 1 <= m["tokens"] <= 8
        assert 0 <= m["cut_at_limit"] <= 1 and m["grading_errors"] == {}
        assert m["tokens_median"] <= m["tokens_p90"] <= 8 and m["accuracy_se"] is not None  # the length statistics
        rows = lines(out / f"{bench}.jsonl")
        assert len(rows) == 6 and {(r["id"], r["sample"]) for r in rows} == {
            (p["id"], j) for p in lines(bench_dir / E.BENCHMARKS[bench])[:3] for j in range(2)}
        assert all({"response", "tokens", "finish", "correct", "pred", "error", "answer"} <= set(r) for r in rows)
    assert set(saved["benchmarks"]["math500"]["by_level"]) <= {"1", "2", "3", "4", "5"}
    table = (out / "summary.md").read_text()
    assert "| model | GSM8K | MATH500 |" in table and f"| {model} |" in table
    assert "## MATH500 by level" in table and "| GSM8K | 3 x 2 |" in table

    # a rerun (here through the command line) generates only what is missing, and compares with a baseline
    gsm = out / "gsm8k.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in lines(gsm)[:-1]))
    base = tmp_path / "base.json"
    base.write_text(json.dumps({**saved, "model": "base"}))
    p = subprocess.run([sys.executable, E.__file__, *args, "--compare", str(base)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(lines(gsm)) == 6 and len(lines(out / "math500.jsonl")) == 6
    compared = json.loads((out / "summary.json").read_text())
    assert compared["compare"]["benchmarks"]["math500"] == {"accuracy_change": 0.0, "token_reduction": 0.0}
    table = (out / "summary.md").read_text()
    assert "| base (baseline) |" in table and "| change | +0.0 pt / +0.0% tokens |" in table

    # responses made with other settings are not mixed in
    with pytest.raises(SystemExit) as e:
        E.main(args[:-2] + ["--out_dir", str(out), "--temperature", "0.5"])
    assert "made otherwise (sampling.temperature: 0.7 -> 0.5)" in str(e.value)


def test_the_long_protocol_is_the_papers_at_the_rivals_cap(tiny_models, bench_dir, tmp_path):
    """--protocol long: the paper's prompts and temperature at 32768 tokens (the model's context caps it here) and 16
    samples on AIME24 and AMC23, recorded in the summary."""
    (bench_dir / E.BENCHMARKS["aime24"]).write_text(json.dumps({"id": "a1", "problem": "1+1?", "answer": "2"}) + "\n")
    summary = E.main(["--model", str(tiny_models["qwen2"]), "--bench", "gsm8k,aime24", "--data_dir", str(bench_dir),
                      "--limit", "1", "--protocol", "long", "--batch_size", "16", "--out_dir", str(tmp_path / "e")])
    s = summary["settings"]
    assert (s["protocol"], s["temperature"], s["top_p"], s["max_new_tokens"]) == ("long", 0.7, 1.0, 32768)
    assert s["samples"] == {"gsm8k": 1, "aime24": 16} and summary["benchmarks"]["aime24"]["responses"] == 16
    assert s["prompts"] == {"gsm8k": E.SKYTHOUGHT_PROMPTS["gsm8k"], "aime24": E.BOXED}


def test_the_dler_protocol_is_the_rivals_one_table():
    """--protocol dler: temperature 0.6, top_p 0.95, 32768 tokens, 16 samples on every benchmark but GSM8K and MATH500,
    DeepSeek's prompt; the other protocols keep one sample where they name none."""
    assert {k: E.PROTOCOLS["dler"][k] for k in ("temperature", "top_p", "max_new_tokens")} == \
        {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 32768}
    benches = ("gsm8k", "math500", "aime24", "amc23", "mine")
    assert [E.protocol_samples("dler", b) for b in benches] == [1, 1, 16, 16, 16]
    assert E.prompt_template("dler", "aime24") is None
    assert [E.protocol_samples("tldr-paper", b) for b in ("gsm8k", "aime24", "mine")] == [1, 8, 1]
