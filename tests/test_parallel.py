"""Data-parallel sampling stages: data/build.py and evaluate.py under torchrun --nproc_per_node=2 (gloo, CPU) write
the same bytes as one process (run here), each process answering every other problem into a part file of its own."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import build
import evaluate as E

ROOT = Path(__file__).resolve().parents[1]


def torchrun(args, port):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", *args]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)


def one_process(main, args) -> str:
    """main(args) here, on one thread as each torchrun process: what it stopped with ("" when it did not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(args)
    except SystemExit as e:
        return str(e.code)
    finally:
        torch.set_num_threads(threads)
    return ""


def test_build_samples_the_same_bytes_on_two_processes(tiny_models, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)})
                                + "\n" for i in range(7)))
    outs = {}
    for processes in (1, 2):
        out = tmp_path / f"run{processes}" / "system2.jsonl"
        args = ["system2", "--model", str(tiny_models["qwen2"]), "--problems", str(problems), "--out", str(out),
                "--samples", "3", "--temperature", "0.8", "--max_new_tokens", "12"]
        stopped = one_process(build.main, args) if processes == 1 else torchrun(["data/build.py", *args], 29741).stderr
        # a random model answers nothing correctly: the stage stops there, after its samples are complete
        assert "no problem got a correct answer (7 problems)" in stopped, stopped[-2000:]
        samples = out.with_suffix(".samples.jsonl")
        assert not list(samples.parent.glob("*.part-*"))  # merged, and the parts removed
        outs[processes] = samples.read_bytes()
    assert outs[1] == outs[2] and len(outs[1].splitlines()) == 21
    rows = [json.loads(line) for line in outs[1].splitlines()]
    assert [(r["id"], r["sample"]) for r in rows] == [(f"q{i}", j) for i in range(7) for j in range(3)]  # input order


def test_evaluate_writes_the_same_bytes_on_two_processes(tiny_models, tmp_path):
    bench = tmp_path / "mini.jsonl"
    bench.write_text("".join(json.dumps({"id": i, "problem": f"Tom has {i} apples and buys 3. How many?",
                                         "answer": str(i + 3)}) + "\n" for i in range(5)))
    files = {}
    for processes in (1, 2):
        out = tmp_path / f"eval{processes}"
        args = ["--model", str(tiny_models["qwen2"]), "--bench", str(bench), "--samples", "2", "--max_new_tokens", "10",
                "--out_dir", str(out)]
        if processes == 1:
            assert one_process(E.main, args) == ""
        else:
            p = torchrun(["evaluate.py", *args], 29743)
            assert p.returncode == 0, p.stderr[-2000:]
        assert (out / "mini.jsonl.lock").is_file()  # the output's lock (it names its last holder: left out below)
        files[processes] = {f.name: f.read_bytes() for f in out.iterdir() if f.suffix != ".lock"}
    assert sorted(files[1]) == ["mini.jsonl", "mini.settings.json", "summary.json", "summary.md"]
    assert files[1] == files[2]
    assert E.bench_metrics  # the summary's numbers come from evaluate.py's own metrics
