"""Every bad setting, file or rerun gets a clear answer (an error that names the setting or the file, no
traceback), and a refused command changes nothing a user made (checked by hashing the folders before and after)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import build
import demo
import evaluate
import grade
import checkpoint
import outputs
import sample
import train
from checkpoint import model_path
from ratio import Bounds

ROOT = Path(__file__).resolve().parents[1]


def snapshot(*folders) -> dict:
    """Every file under the folders and its sha256 (and mode): what a refused command must leave as it was. (A
    run's lock file is the scripts' own: it names the last process that held it.)"""
    return {str(f): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mode) for d in folders
            for f in sorted(Path(d).rglob("*")) if f.is_file() and not f.name.endswith(".lock")}


def refused(main, argv, message, *folders):
    """main(argv) stops with a message containing `message`, and every file under `folders` is unchanged."""
    before = snapshot(*folders)
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert message in str(e.value), str(e.value)
    assert snapshot(*folders) == before


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def work(tiny_models, tmp_path_factory):
    """A problems file, a finished sampling output, a finished training run, an evaluation: things a user made."""
    d = tmp_path_factory.mktemp("work")
    model = tiny_models["qwen2"]
    write_jsonl(d / "problems.jsonl", [{"id": f"p{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)}
                                       for i in range(4)])
    outputs.main(["--model", str(model), "--prompts", str(d / "problems.jsonl"), "--out", str(d / "out.jsonl"),
                 "--samples", "2", "--max_new_tokens", "6", "--temperature", "0.7"])
    write_jsonl(d / "s1.jsonl", [{"problem": f"{a}+1", "response": f"</think>\n\n\\boxed{{{a + 1}}}"}
                                 for a in range(8)])
    (d / "bounds.json").write_text(Bounds(10, 0.1, 40, 0.6).to_json(
        sampling={"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 6}))
    train.main(train_args(model, d, max_steps=2, save_interval=2))
    evaluate.main(["--model", str(model), "--bench", str(d / "problems.jsonl"), "--samples", "1",
                   "--max_new_tokens", "6", "--out_dir", str(d / "eval")])
    return d, model


def train_args(model, d, **over):
    base = dict(model=model, system1=d / "s1.jsonl", system2=d / "s1.jsonl", dev=d / "problems.jsonl",
                bounds=d / "bounds.json", out_dir=d / "run", max_steps=2, global_batch=4, row_tokens=200, max_len=200,
                eval_interval=2, save_interval=2, dev_max_new_tokens=6, resume=True)
    base.update(over)
    return [f"--{k}={v}" for k, v in base.items()]


# -----------------------------------------------------------------------------
# bad settings: every script checks them all before any work


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-1", "temperature=-1.0: must be at least 0"),
    ("--temperature", "nan", "temperature=nan: must be at least 0"),
    ("--top_p", "7", "top_p=7.0: must be more than 0 and at most 1"),
    ("--top_p", "0", "top_p=0.0: must be more than 0"),
    ("--top_k", "-2", "top_k=-2: must be at least 0"),
    ("--max_new_tokens", "0", "max_new_tokens=0: must be at least 1"),
    ("--samples", "0", "samples=0: must be at least 1"),
    ("--batch_size", "-4", "batch_size=-4: must be at least 1"),
])
def test_sample_refuses_bad_settings(work, flag, value, message):
    d, model = work
    refused(outputs.main, ["--model", model, "--prompts", d / "problems.jsonl", "--out", d / "out.jsonl", flag, value],
            message, d)


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-0.5", "temperature=-0.5"), ("--top_p", "inf", "top_p=inf"), ("--samples", "0", "samples=0"),
    ("--limit", "-1", "limit=-1: must be at least 0"), ("--max_new_tokens", "-8", "max_new_tokens=-8"),
    ("--batch_size", "0", "batch_size=0"), ("--size", "0", "size=0: must be at least 1"),
])
def test_build_refuses_bad_settings(work, flag, value, message):
    d, model = work
    refused(build.main, ["system2", "--model", model, "--problems", d / "problems.jsonl", "--out", d / "out.jsonl",
                         flag, value], message, d)


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-1", "temperature=-1.0"), ("--top_p", "2", "top_p=2.0"), ("--top_p", "nan", "top_p=nan"),
    ("--seed", "-3", "seed=-3: must be at least 0"),
])
def test_evaluate_refuses_bad_settings(work, flag, value, message):
    d, model = work
    refused(evaluate.main, ["--model", model, "--bench", d / "problems.jsonl", "--out_dir", d / "eval", flag, value],
            message, d)


@pytest.mark.parametrize("setting, message", [
    ("save_interval=0", "save_interval=0: must be at least 1"),
    ("global_batch=0", "global_batch=0: must be at least 1"),
    ("lr=-1e-5", "lr=-1e-05: must be more than 0"), ("lr=nan", "lr=nan"),
    ("w_short=2", "w_short=2.0: must be between 0 and 1"), ("dev_top_p=0", "dev_top_p=0.0"),
    ("dev_temperature=-0.7", "dev_temperature=-0.7"), ("beta2=1", "beta2=1.0: must be at least 0 and less than 1"),
    ("keep_checkpoints=0", "keep_checkpoints=0"), ("max_len=-5", "max_len=-5"), ("eval_interval=0", "eval_interval=0"),
    ("dev_max_new_tokens=0", "dev_max_new_tokens=0"), ("warmup_steps=-1", "warmup_steps=-1"),
    ("dtype=float16", "dtype='float16': use auto, float32 or bfloat16"),
    ("loss_norm=mean", "loss_norm='mean': use sequence, group or token"),
    ("loss_norm=group --loss_group=3", "loss_group=3 does not divide global_batch=4"),
    ("lr_schedule=step", "lr_schedule='step': use constant, linear or cosine"),
])
def test_train_refuses_bad_settings(work, setting, message):
    d, model = work
    refused(train.main, train_args(model, d) + [f"--{part}" for part in setting.split(" --")], message, d)


def test_train_refuses_a_bad_setting_in_a_config_file(work, tmp_path):
    d, model = work
    (tmp_path / "recipe.py").write_text("lr = 0.0\nmax_steps = 3\n")
    refused(train.main, [tmp_path / "recipe.py"] + train_args(model, d), "lr=0.0: must be more than 0", d)


@pytest.mark.parametrize("argv, message", [
    (["--out_dir", "x", "--test_easy", "100"], "test_easy=100: must be between 1 and 81"),
    (["--out_dir", "x", "--dev_problems", "0"], "dev_problems=0: must be at least 1"),
])
def test_demo_data_refuses_bad_settings(argv, message):
    with pytest.raises(SystemExit, match=message):
        demo.main(argv)


def test_tiny_refuses_bad_settings(tmp_path):
    p = subprocess.run([sys.executable, "data/tiny.py", "--out_dir", str(tmp_path / "m"), "--layers", "0"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "layers=0: must be at least 1" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "m").exists()


def test_grade_refuses_bad_settings(work, tmp_path):
    d, _ = work
    p = subprocess.run([sys.executable, "grade.py", str(d / "out.jsonl"), "--workers", "0"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "workers=0: must be at least 1" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("script, wrong, right", [
    ("sample.py", "--max-new-tokens", "--max_new_tokens"), ("evaluate.py", "--top-p", "--top_p"),
    ("data/build.py", "--batch-size", "--batch_size"), ("grade.py", "--tokens-field", "--tokens_field"),
    ("data/prepare.py", "--out-dir", "--out_dir"), ("train.py", "--max-steps", "max_steps"),
])
def test_a_flag_spelled_with_dashes_names_the_right_spelling(script, wrong, right):
    p = subprocess.run([sys.executable, script, f"{wrong}=3", "x"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and right in p.stderr and "underscores" in p.stderr and "Traceback" not in p.stderr


# -----------------------------------------------------------------------------
# bad files: every field is checked for its type as it is read, and named with file:line


@pytest.mark.parametrize("row, message", [
    ({"id": "a", "problem": 5, "answer": "1"}, "bad.jsonl:2: 'problem' must be a string, got 5"),
    ({"id": "a", "problem": "x", "answer": None}, "bad.jsonl:2: 'answer' must be a string or a number, got null"),
    ({"id": ["a"], "problem": "x", "answer": "1"}, "bad.jsonl:2: 'id' must be a string or a whole number"),
    ({"id": True, "problem": "x", "answer": "1"}, "bad.jsonl:2: 'id' must be a string or a whole number, got true"),
])
def test_problem_files_with_a_field_of_the_wrong_type(work, tmp_path, row, message):
    d, model = work
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "ok", "problem": "1+1", "answer": "2"}, row])
    refused(build.main, ["system2", "--model", model, "--problems", bad, "--out", d / "out.jsonl"], message, d)
    refused(evaluate.main, ["--model", model, "--bench", bad, "--out_dir", d / "eval"], message, d)
    refused(outputs.main, ["--model", model, "--prompts", bad, "--out", d / "out.jsonl"], message, d)
    refused(train.main, train_args(model, d, dev=bad), message, d)


def test_two_problems_under_one_id_are_refused(work, tmp_path):
    """Outputs store completions under (id, sample): a repeated id (7 and "7" too) would silently merge two
    problems' completions."""
    d, model = work
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 7, "problem": "1+1", "answer": "2"},
                                               {"id": "x", "problem": "2+2", "answer": "4"},
                                               {"id": "7", "problem": "3+3", "answer": "6"}])
    message = "bad.jsonl:3: id '7' again (line 1 has it): every line needs its own id"
    refused(build.main, ["system2", "--model", model, "--problems", bad, "--out", d / "out.jsonl"], message, d)
    refused(evaluate.main, ["--model", model, "--bench", bad, "--out_dir", d / "eval"], message, d)
    refused(outputs.main, ["--model", model, "--prompts", bad, "--out", d / "out.jsonl"], message, d)


@pytest.mark.parametrize("row, message", [
    ({"problem": 5, "response": "x"}, "bad.jsonl:1: 'problem' must be a string, got 5"),
    ({"problem": "x", "response": ["x"]}, "bad.jsonl:1: 'response' must be a string"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "bad.jsonl:1: 'messages'"),
    ({"messages": "hello"}, "bad.jsonl:1: 'messages' must be a list"),
])
def test_training_files_with_a_field_of_the_wrong_type(work, tmp_path, row, message):
    d, model = work
    bad = write_jsonl(tmp_path / "bad.jsonl", [row])
    refused(train.main, train_args(model, d, system1=bad, out_dir=tmp_path / "run"), message, d)


def test_grade_files_with_a_field_of_the_wrong_type(work, tmp_path):
    d, _ = work
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"response": "\\boxed{1}", "answer": "1", "ok": "yes"}])
    with pytest.raises(SystemExit, match="bad.jsonl:1: 'ok' must be true or false"):
        grade.main([str(bad), "--agree", "ok"])


def test_evaluate_compare_with_a_summary_missing_a_key(work, tmp_path):
    d, model = work
    summary = json.loads((d / "eval" / "summary.json").read_text())
    del summary["benchmarks"]["problems"]["tokens"]
    (tmp_path / "base.json").write_text(json.dumps(summary))
    refused(evaluate.main, ["--model", model, "--bench", d / "problems.jsonl", "--samples", "1", "--max_new_tokens",
                            "6", "--out_dir", d / "eval", "--compare", tmp_path / "base.json"],
            "is not a summary.json written by evaluate.py", d)


# -----------------------------------------------------------------------------
# reruns: no run destroys another; stale files are refused; damaged artifacts are named


def test_a_forgotten_resume_destroys_nothing(work):
    """train.py into a folder that holds a run, without --resume: refused before any work."""
    d, model = work
    refused(train.main, train_args(model, d, resume=False), "holds a run already (step_000002, metrics.jsonl)", d)
    refused(train.main, train_args(model, d, resume=False, max_steps=8), "pass --resume to continue it", d)


def test_pruning_keeps_another_runs_checkpoints(work, tmp_path):
    """A checkpoint of another run in the folder (copied there by hand) is never pruned by this run."""
    d, model = work
    other = tmp_path / "other"
    train.main(train_args(model, d, out_dir=other, max_steps=1, save_interval=1, eval_interval=1))
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    shutil.copytree(other / "step_000001", run / "step_000001")
    train.main(train_args(model, d, out_dir=run, max_steps=4, save_interval=1, keep_checkpoints=1))
    assert sorted(p.name for p in checkpoint.checkpoints(run)) == ["step_000001", "step_000004"]  # the other run's kept


def test_stale_samples_are_refused(work, tiny_models):
    """Resuming an output made with another model or other sampling settings, or for edited problems, is refused."""
    d, model = work
    out = d / "out.jsonl"
    common = ["--prompts", d / "problems.jsonl", "--out", out, "--samples", "2", "--max_new_tokens", "6"]
    refused(outputs.main, ["--model", model, *common, "--temperature", "0.9"],
            "made otherwise (sampling.temperature: 0.7 -> 0.9)", d)
    refused(outputs.main, ["--model", tiny_models["llama"], *common, "--temperature", "0.7"], "model.path:", d)
    stage = ["system2", "--model", model, "--problems", d / "problems.jsonl", "--out", d.parent / "s2" / "s2.jsonl",
             "--samples", "2", "--max_new_tokens", "6", "--temperature", "0.7"]
    with pytest.raises(SystemExit, match="no problem got a correct answer"):  # a random model: samples, no data
        build.main([str(a) for a in stage])
    refused(build.main, stage + ["--top_p", "0.9"], "sampling.top_p: 1.0 -> 0.9", d, d.parent / "s2")
    edited = write_jsonl(d.parent / "edited.jsonl", [{"id": "p0", "problem": "What is 9 + 9?", "answer": "18"}])
    refused(outputs.main, ["--model", model, "--prompts", edited, "--out", out, "--samples", "2", "--max_new_tokens",
                          "6", "--temperature", "0.7"], "id p0 was sampled for another problem text", d)


def test_evaluation_grades_against_the_current_answer_key(work, tmp_path):
    d, model = work
    bench = write_jsonl(tmp_path / "b.jsonl", [{"id": 0, "problem": "What is 0 + 1?", "answer": "1"}])
    args = [str(a) for a in ("--model", model, "--bench", bench, "--samples", "1", "--max_new_tokens", "6",
                             "--out_dir", tmp_path / "e")]
    evaluate.main(args)
    response = json.loads((tmp_path / "e" / "b.jsonl").read_text())["response"]
    write_jsonl(bench, [{"id": 0, "problem": "What is 0 + 1?", "answer": response.strip() or "x"}])
    evaluate.main(args)  # nothing is sampled again; the answer is the file's current one
    row = json.loads((tmp_path / "e" / "b.jsonl").read_text())
    assert row["answer"] == (response.strip() or "x")


def test_an_output_whose_last_line_lacks_its_newline_is_repaired(work, tmp_path):
    d, model = work
    out = tmp_path / "o.jsonl"
    shutil.copy(d / "out.jsonl", out)
    shutil.copy(d / "out.settings.json", tmp_path / "o.settings.json")
    out.write_text(out.read_text().rstrip("\n"))  # an editor dropped the final newline
    lines = out.read_text().splitlines()
    outputs.main(["--model", str(model), "--prompts", str(d / "problems.jsonl"), "--out", str(out), "--samples", "3",
                 "--max_new_tokens", "6", "--temperature", "0.7"])
    again = out.read_text().splitlines()
    assert len(again) == 12 and all(json.loads(line) for line in again)  # no "}{"
    assert set(lines) <= set(again)


def test_a_damaged_line_inside_an_output_is_named_and_nothing_is_written(work, tmp_path):
    """Only the last line can be a torn write; a bad line before it means the file is not sample.py's output: it is
    refused with its line number, and the file is left as it was."""
    d, model = work
    out = tmp_path / "o.jsonl"
    shutil.copy(d / "out.settings.json", tmp_path / "o.settings.json")
    lines = (d / "out.jsonl").read_text().splitlines()
    out.write_text("\n".join([lines[0], '{"id": 1, "sample": "x"}', *lines[2:]]) + "\n")
    refused(outputs.main, ["--model", model, "--prompts", d / "problems.jsonl", "--out", out, "--samples", "3",
                           "--max_new_tokens", "6", "--temperature", "0.7"], "o.jsonl:2: 'sample' must be", tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda c: (c / "train_state" / "state.json").write_text('{"step": 2, "conf'), "state.json is missing or damaged"),
    (lambda c: (c / "train_state" / "optimizer-rank00000-of-00001.safetensors").write_bytes(b"\0" * 40),
     "cannot read the optimizer state"),
    (lambda c: (c / "model.safetensors").write_bytes(b"\0" * 40), "model.safetensors: cannot read the weights"),
    (lambda c: (c / "config.json").write_text("{"), "config.json: line 1: not valid JSON"),
])
def test_a_damaged_checkpoint_is_named_on_resume(work, tmp_path, damage, message):
    d, model = work
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    damage(run / "step_000002")
    refused(train.main, train_args(model, d, out_dir=run, max_steps=4), message, run)


def test_a_damaged_tokenizer_is_named(work, tmp_path):
    d, model = work
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / "tokenizer.json").write_text((broken / "tokenizer.json").read_text()[:300])
    refused(outputs.main, ["--model", broken, "--prompt", "hi"], "tokenizer.json: damaged", d)


@pytest.mark.parametrize("text, message", [
    ("{not json", "chosen.json is damaged"), ('{"step": 2}', "chosen.json is damaged (KeyError"),
    ('{"checkpoint": "/nowhere/step_000002"}', "names /nowhere/step_000002, which is not a checkpoint"),
    (None, "chosen.json: no such file"),
])
def test_a_damaged_or_missing_choice_is_never_replaced_by_another_checkpoint(work, tmp_path, text, message):
    d, _ = work
    chosen = tmp_path / "chosen.json"
    if text is not None:
        chosen.write_text(text)
    refused(evaluate.main, ["--model", chosen, "--bench", d / "problems.jsonl", "--out_dir", tmp_path / "e"],
            message, d)


def test_model_is_a_directory_a_run_folder_or_a_choice(work, tmp_path):
    d, model = work
    assert model_path(model) == Path(model)
    assert model_path(d / "run") == d / "run" / "step_000002"  # a run's folder: its latest checkpoint
    (tmp_path / "chosen.json").write_text(json.dumps({"step": 2, "checkpoint": str(d / "run" / "step_000002")}))
    assert model_path(tmp_path / "chosen.json") == d / "run" / "step_000002"
    run = tmp_path / "run"
    for step in (2, 10, 4):
        shutil.copytree(d / "run" / "step_000002", run / f"step_{step:06d}")
    (run / ".step_000012.tmp").mkdir()  # a killed save's temporary directory is never taken
    assert model_path(run) == run / "step_000010"
    out = tmp_path / "e"
    evaluate.main(["--model", str(run), "--bench", str(d / "problems.jsonl"), "--samples", "1",
                   "--max_new_tokens", "4", "--out_dir", str(out)])
    assert json.loads((out / "summary.json").read_text())["model"] == str(run / "step_000010")


def test_written_files_are_readable_by_others(work):
    d, _ = work
    step_dir = d / "run" / "step_000002"
    for f in [step_dir, step_dir / "model.safetensors", step_dir / "train_state" / "state.json",
              d / "run" / "metrics.jsonl", d / "run" / "chosen.json", d / "out.jsonl", d / "eval" / "summary.json"]:
        if f.exists():
            assert f.stat().st_mode & 0o044 == 0o044, f  # group and others may read


def test_clear_errors_print_no_traceback(work, tmp_path):
    d, model = work
    for argv in (["sample.py", "--model", str(model), "--prompt", "hi", "--temperature", "-1"],
                 ["train.py", *train_args(model, d, resume=False)],
                 ["evaluate.py", "--model", str(tmp_path / "chosen.json"), "--bench", str(d / "problems.jsonl")]):
        p = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.strip(), (argv, p.stderr[-500:])


# -----------------------------------------------------------------------------
# faults of the machine: a second launch into the same run, a full disk

def hold_lock_in_a_process(lock: Path, hold: str):
    """Another process that takes `lock` as the scripts do, then (hold='sleep') keeps it or (hold='die') is killed
    with SIGKILL while holding it."""
    code = (f"import sys, time, os; sys.path.insert(0, {str(ROOT)!r}); from common import exclusive\n"
            f"with exclusive({str(lock)!r}, 'x'):\n    print('held', flush=True)\n"
            + ("    time.sleep(60)\n" if hold == "sleep" else "    os.kill(os.getpid(), 9)\n"))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if hold == "sleep":
        assert p.stdout.readline().strip() == "held"
    else:
        p.wait(timeout=30)
    return p


def test_a_second_launch_into_a_running_run_is_refused_with_the_holders_pid(work, tmp_path):
    """A scheduler's requeue, two terminals, make twice: the second train.py (or sample.py) into the same folder
    (output) stops at once, naming the process that holds it; the first run's files are untouched."""
    d, model = work
    holder = hold_lock_in_a_process(d / "run" / ".lock", "sleep")
    try:
        refused(train.main, train_args(model, d, max_steps=4), f"is in use by pid {holder.pid} on ", d)
    finally:
        holder.kill()
        holder.wait()
    holder = hold_lock_in_a_process(d / "out.jsonl.lock", "sleep")
    try:
        refused(outputs.main, ["--model", model, "--prompts", d / "problems.jsonl", "--out", d / "out.jsonl",
                              "--samples", "2", "--max_new_tokens", "6", "--temperature", "0.7"],
                f"the output {d / 'out.jsonl'} is in use by pid {holder.pid}", d)
    finally:
        holder.kill()
        holder.wait()


def test_two_launches_at_once_one_runs_one_is_refused(work, tmp_path):
    d, model = work
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(model, d, out_dir=out, max_steps=8,
                                                                                  save_interval=4, resume=False)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in first.stdout:  # wait until the first has started training (it holds the lock from before)
        if line.startswith("step 1/"):
            break
    second = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_args(model, d, out_dir=out, max_steps=8)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    rest = first.communicate(timeout=300)[0]
    assert second.returncode != 0 and f"is in use by pid {first.pid} on " in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr and first.returncode == 0, rest[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 9)) and (out / "step_000008").is_dir()  # each step once: only the first trained


def test_a_lock_left_by_a_killed_process_does_not_block(work, tmp_path):
    d, model = work
    out = tmp_path / "run"
    hold_lock_in_a_process(out / ".lock", "die")
    assert (out / ".lock").read_text().startswith("pid ")  # what the killed process wrote is still there
    train.main([str(a) for a in train_args(model, d, out_dir=out, max_steps=2, resume=False)])
    assert (out / "step_000002").is_dir()


def test_a_checkpoint_write_that_fails_leaves_the_last_one_and_no_temporary_files(work, tmp_path, monkeypatch):
    """The disk fills while a checkpoint is written: one line naming the path, the cause and what to do; no
    .step_*.tmp directory holding the space; the previous checkpoint intact; --resume then gives the run an
    uninterrupted one gives."""
    import errno
    d, model = work
    full, out = tmp_path / "full", tmp_path / "run"
    train.main([str(a) for a in train_args(model, d, out_dir=full, max_steps=4, resume=False)])
    real, calls = checkpoint.write_weights, []

    def disk_full(cfg, tensors, fetch, directory, dtype):
        calls.append(directory)
        if len(calls) == 2:  # the second checkpoint: part of a shard, then no space
            (directory / "model.safetensors").write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(cfg, tensors, fetch, directory, dtype)

    monkeypatch.setattr(checkpoint, "write_weights", disk_full)
    with pytest.raises(SystemExit) as e:
        train.main([str(a) for a in train_args(model, d, out_dir=out, max_steps=4, resume=False)])
    message = str(e.value)
    assert message.startswith(f"error: cannot write {out / '.step_000004.tmp'}: No space left on device") and \
        f"--resume: it continues from {out / 'step_000002'}" in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == [".lock", "metrics.jsonl", "step_000002"]
    monkeypatch.setattr(checkpoint, "write_weights", real)
    train.main([str(a) for a in train_args(model, d, out_dir=out, max_steps=4)])
    load = lambda run: load_file(str(run / "step_000004" / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(load(full).values(), load(out).values()))


def test_a_write_that_fails_stops_with_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """common.atomic_write (every output, summary, report and state file): the old content stays, no .tmp file."""
    import errno
    from common import atomic_write
    target = tmp_path / "summary.json"
    target.write_text("old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(SystemExit, match=f"cannot write {target}: No space left on device. Nothing half-written"):
        atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
