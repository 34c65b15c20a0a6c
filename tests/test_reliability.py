"""Every bad setting, file or rerun gets a clear answer (an error that names the setting or the file, no
traceback), and a refused command changes nothing a user made (checked by hashing the folders before and after).
Grouped by kinds, each tried with several members: settings and fields; reruns and damaged files; the machine's
faults (locks, full disks); then links and permissions, values inside files, advice that works, content-addressed
resume, outputs that never overwrite inputs, bounded memory, interrupts."""
import functools
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
import prompts
import sample
import train
from checkpoint import model_path
from ratio import Bounds

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = functools.partial(prompts.main, sample.generate)  # what `python sample.py` runs


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
    SAMPLE(["--model", str(model), "--prompts", str(d / "problems.jsonl"), "--out", str(d / "out.jsonl"),
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
    refused(SAMPLE, ["--model", model, "--prompts", d / "problems.jsonl", "--out", d / "out.jsonl", flag, value],
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
    refused(SAMPLE, ["--model", model, "--prompts", bad, "--out", d / "out.jsonl"], message, d)
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
    refused(SAMPLE, ["--model", model, "--prompts", bad, "--out", d / "out.jsonl"], message, d)


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
    # the other run's kept; of this run's, the latest and the one before it (the one a diverged run continues from)
    assert sorted(p.name for p in checkpoint.checkpoints(run)) == ["step_000001", "step_000003", "step_000004"]


def test_stale_samples_are_refused(work, tiny_models):
    """Resuming an output made with another model or other sampling settings, or for edited problems, is refused."""
    d, model = work
    out = d / "out.jsonl"
    common = ["--prompts", d / "problems.jsonl", "--out", out, "--samples", "2", "--max_new_tokens", "6"]
    refused(SAMPLE, ["--model", model, *common, "--temperature", "0.9"],
            "made otherwise (sampling.temperature: 0.7 -> 0.9)", d)
    refused(SAMPLE, ["--model", tiny_models["llama"], *common, "--temperature", "0.7"], "made otherwise (model: ", d)
    stage = ["system2", "--model", model, "--problems", d / "problems.jsonl", "--out", d.parent / "s2" / "s2.jsonl",
             "--samples", "2", "--max_new_tokens", "6", "--temperature", "0.7"]
    with pytest.raises(SystemExit, match="no problem got a correct answer"):  # a random model: samples, no data
        build.main([str(a) for a in stage])
    refused(build.main, stage + ["--top_p", "0.9"], "sampling.top_p: 1.0 -> 0.9", d, d.parent / "s2")
    edited = write_jsonl(d.parent / "edited.jsonl", [{"id": "p0", "problem": "What is 9 + 9?", "answer": "18"}])
    refused(SAMPLE, ["--model", model, "--prompts", edited, "--out", out, "--samples", "2", "--max_new_tokens",
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
    SAMPLE(["--model", str(model), "--prompts", str(d / "problems.jsonl"), "--out", str(out), "--samples", "3",
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
    refused(SAMPLE, ["--model", model, "--prompts", d / "problems.jsonl", "--out", out, "--samples", "3",
                           "--max_new_tokens", "6", "--temperature", "0.7"], "o.jsonl:2: 'sample' must be", tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda c: (c / "train_state" / "state.json").write_text('{"step": 2, "conf'), "state.json is missing or damaged"),
    (lambda c: (c / "train_state" / "optimizer-rank00000-of-00001.safetensors").write_bytes(b"\0" * 40),
     "cannot read the optimizer state"),
    (lambda c: (c / "model.safetensors").write_bytes(b"\0" * 40), "model.safetensors: cannot read the weights"),
    (lambda c: (c / "config.json").write_text("{"), "config.json:1: not valid JSON"),
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
    refused(SAMPLE, ["--model", broken, "--prompt", "hi"], "tokenizer.json: damaged", d)


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
        refused(SAMPLE, ["--model", model, "--prompts", d / "problems.jsonl", "--out", d / "out.jsonl",
                              "--samples", "2", "--max_new_tokens", "6", "--temperature", "0.7"],
                f"the output {d / 'out.jsonl'} is in use by pid {holder.pid}", d)
    finally:
        holder.kill()
        holder.wait()


def test_two_launches_at_once_one_runs_one_is_refused(work, tmp_path):
    """A second train.py into a run folder while the first trains: refused with the first's pid; the first, stopped
    with SIGTERM afterwards (it would run for long), trained every step once."""
    import signal
    d, model = work
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(model, d, out_dir=out,
                                                                                  max_steps=10_000, save_interval=4,
                                                                                  eval_interval=10_000, resume=False)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in first.stdout:  # wait until the first has started training (it holds the lock from before)
        if line.startswith("step 1/"):
            break
    second = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_args(model, d, out_dir=out, max_steps=8)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    first.send_signal(signal.SIGTERM)
    rest = first.communicate(timeout=300)[0]
    assert second.returncode != 0 and f"is in use by pid {first.pid} on " in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr and first.returncode == 130, rest[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 1  # each step once: only the first trained


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


# =============================================================================
# Kinds of input, each a rule enforced in one place (common.py's file helpers and run(), checkpoint.py's reads
# and resume), tried with several members of the kind through the scripts' entry points.


def script(main, *argv, monkeypatch):
    """A script as its command line runs it (common.run around its main, or a module's, sys.argv its arguments):
    the SystemExit it ends with (a test of a success would not call this)."""
    from common import run
    monkeypatch.setattr(sys, "argv", ["script", *map(str, argv)])
    with pytest.raises(SystemExit) as e:
        run(getattr(main, "main", main), "(kept)")
    return str(e.value.code)


def one_line(message: str, *parts, where=""):
    assert "\n" not in message.strip() and "Traceback" not in message, (where, message)
    for part in parts:
        assert part in message, (where, part, message)


# -----------------------------------------------------------------------------
# kind: links and permissions


@pytest.fixture
def outside(tmp_path):
    """A file outside every folder a command is given: what a planted link points at, which must stay as it is."""
    f = tmp_path / "outside" / "precious.txt"
    f.parent.mkdir()
    f.write_text("precious\n")
    return f


@pytest.mark.parametrize("planted", ["out.jsonl", "out.settings.json", "out.jsonl.lock",
                                     "out.jsonl.part-00000-of-00001"])
def test_a_link_planted_at_any_file_of_a_sampling_output_is_refused(work, tmp_path, outside, planted, monkeypatch):
    d, model = work
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / planted).symlink_to(outside)
    message = script(SAMPLE, "--model", model, "--prompts", d / "problems.jsonl", "--out", tmp_path / "o" / "out.jsonl",
                     "--max_new_tokens", "4", monkeypatch=monkeypatch)
    one_line(message, str(tmp_path / "o" / planted), "symbolic link")
    assert outside.read_text() == "precious\n" and sorted(p.name for p in (tmp_path / "o").iterdir()) in (
        [planted], sorted([planted, "out.jsonl.lock"]))


@pytest.mark.parametrize("planted", ["metrics.jsonl", "chosen.json", ".lock", "step_000002"])
def test_a_link_planted_in_a_run_folder_is_refused_before_training(work, tmp_path, outside, planted, monkeypatch):
    d, model = work
    run = tmp_path / "run"
    run.mkdir()
    (run / planted).symlink_to(outside.parent if planted.startswith("step") else outside)
    before = snapshot(outside.parent)
    message = script(train, *train_args(model, d, out_dir=run, resume=False), monkeypatch=monkeypatch)
    one_line(message, str(run / planted), "symbolic link")
    assert snapshot(outside.parent) == before and not (run / "step_000001").exists()


@pytest.mark.parametrize("module, argv, planted", [
    (evaluate, lambda d, o: ["--bench", d / "problems.jsonl", "--out_dir", o, "--max_new_tokens", "4"], "summary.json"),
    (evaluate, lambda d, o: ["--bench", d / "problems.jsonl", "--out_dir", o, "--max_new_tokens", "4"],
     "problems.jsonl"),
    (build, lambda d, o: ["dev", "--problems", d / "problems.jsonl", "--size", "2", "--out", o / "dev.jsonl"],
     "dev.jsonl"),
    (grade, lambda d, o: [d / "out.jsonl", "--out", o / "graded.jsonl"], "graded.jsonl"),
])
def test_a_link_planted_at_an_output_is_refused_for_every_script(work, tmp_path, outside, module, argv, planted,
                                                                 monkeypatch):
    d, model = work
    o = tmp_path / "o"
    o.mkdir()
    (o / planted).symlink_to(outside)
    args = argv(d, o) + (["--model", model] if module is evaluate else [])
    one_line(script(module, *args, monkeypatch=monkeypatch), str(o / planted), "symbolic link")
    assert outside.read_text() == "precious\n"


@pytest.fixture(params=["read-only", "full"])
def refusing_disk(request, tmp_path):
    """A tmpfs (a real read-only or full disk, which root's permission bits could not give): (its folder, the cause
    an OSError names, refuse()), refuse() making it read-only (EROFS) or filling it (ENOSPC) once the test has put
    there what it needs."""
    disk = tmp_path / request.param
    disk.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}): the read-only and full-disk tries need one")

    def refuse():
        if request.param == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            return
        try:  # every block taken
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
    yield disk, "Read-only file system" if request.param == "read-only" else "No space left on device", refuse
    subprocess.run(["umount", str(disk)])


def test_every_script_stops_in_one_line_on_a_disk_that_refuses(work, tmp_path, refusing_disk, monkeypatch):
    """train, sample, evaluate, build, grade, report, prepare, tiny and demo, each writing into a read-only or a full
    disk: one line naming the path and the cause, nothing half-written, no traceback."""
    import prepare
    import report as report_script
    import tiny as tiny_script
    d, model = work
    disk, cause, refuse = refusing_disk
    release = tmp_path / "release"
    (release / "7b").mkdir(parents=True)
    (release / "7b" / "s1.json").write_text(json.dumps({"query": "1+1?", "response": "2"}) + "\n")
    monkeypatch.setattr(prepare, "OFFICIAL", {"7b": {"system1": ("7b/s1.json",
                                                                 prepare.git_blob_sha1(release / "7b" / "s1.json"))}})
    shutil.copytree(d / "eval", disk / "report" / "eval" / "base")  # a run to report on, made before
    for folder in ("run", "sampled", "eval", "built", "graded", "official", "model", "demo"):
        (disk / folder).mkdir()
    refuse()
    before = snapshot(disk)
    for module, argv in [
        (train, train_args(model, d, out_dir=disk / "run", resume=False)),
        (SAMPLE, ["--model", model, "--prompts", d / "problems.jsonl", "--out", disk / "sampled" / "out.jsonl",
                   "--max_new_tokens", "4"]),
        (evaluate, ["--model", model, "--bench", d / "problems.jsonl", "--out_dir", disk / "eval", "--max_new_tokens",
                    "4", "--samples", "1"]),
        (build, ["dev", "--problems", d / "problems.jsonl", "--size", "2", "--out", disk / "built" / "dev.jsonl"]),
        (grade, [d / "out.jsonl", "--out", disk / "graded" / "graded.jsonl"]),
        (report_script, [disk / "report"]),
        (prepare, ["--official", "7b", "--out_dir", disk / "official", "--official_url", f"file://{release}/"]),
        (tiny_script, ["--out_dir", disk / "model" / "m"]),
        (demo, ["--out_dir", disk / "demo"]),
    ]:
        name = getattr(module, "__name__", "sample")
        one_line(script(module, *argv, monkeypatch=monkeypatch), str(disk), cause, where=name)
        assert snapshot(disk) == before, name


# -----------------------------------------------------------------------------
# kind: values inside files, not only names and shapes


def model_with(tmp_path, model, name, config=None, tensors=None):
    """A copy of the tiny model with config.json keys replaced and tensors changed in place (same shapes, dtypes)."""
    from safetensors.torch import save_file
    copy = tmp_path / name
    shutil.copytree(model, copy)
    if config:
        hf = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**hf, **config}))
    if tensors:
        weights = load_file(str(copy / "model.safetensors"))
        for key, change in tensors.items():
            weights[key] = change(weights[key].clone())
        save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize("config, message", [
    ({"num_attention_heads": 3}, "num_attention_heads=3 does not divide hidden_size=64"),
    ({"num_key_value_heads": 3}, "num_key_value_heads=3 does not divide num_attention_heads=4"),
    ({"num_hidden_layers": -1}, "num_hidden_layers must be a whole number above 0, got -1"),
    ({"vocab_size": 300.5}, "vocab_size must be a whole number above 0, got 300.5"),
    ({"hidden_size": "64"}, 'hidden_size must be a whole number above 0, got "64"'),
    ({"max_position_embeddings": True}, "max_position_embeddings must be a whole number above 0, got true"),
    ({"rope_theta": 0}, "rope_theta must be a number above 0, got 0"),
    ({"rms_norm_eps": "1e-6"}, 'rms_norm_eps must be a number above 0, got "1e-6"'),
])
def test_a_config_json_with_wrong_values_is_refused_before_anything_is_built(work, tmp_path, config, message,
                                                                           monkeypatch):
    d, model = work
    bad = model_with(tmp_path, model, "bad", config=config)
    for module, argv in [(SAMPLE, ["--model", bad, "--prompt", "hi"]),
                         (train, train_args(bad, d, out_dir=tmp_path / "run", resume=False))]:
        one_line(script(module, *argv, monkeypatch=monkeypatch), f"{bad / 'config.json'}: {message}",
                 "re-download", where=getattr(module, "__name__", "sample"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_named_when_read(work, tmp_path, value, monkeypatch):
    d, model = work
    bad = model_with(tmp_path, model, "bad", tensors={"model.layers.1.mlp.down_proj.weight":
                                                      lambda t: t.index_fill_(0, torch.tensor([3]), value)})
    for module, argv in [(SAMPLE, ["--model", bad, "--prompt", "hi"]),
                         (train, train_args(bad, d, out_dir=tmp_path / "run", resume=False))]:
        one_line(script(module, *argv, monkeypatch=monkeypatch), "model.safetensors: model.layers.1.mlp.down_proj."
                 "weight holds values that are not finite", where=getattr(module, "__name__", "sample"))


def test_a_model_whose_logits_are_not_finite_stops_sampling_and_writes_nothing(work, tmp_path, monkeypatch):
    """Finite weights whose logits overflow (a diverged model): sampling stops at once, no completion written."""
    d, model = work
    bad = model_with(tmp_path, model, "bad", tensors={"model.norm.weight": lambda t: t * 3e38})
    out = tmp_path / "o" / "out.jsonl"
    one_line(script(SAMPLE, "--model", bad, "--prompts", d / "problems.jsonl", "--out", out, "--max_new_tokens",
                    "4", monkeypatch=monkeypatch), "the model's logits are not finite")
    assert not out.exists() and not any(f.stat().st_size for f in out.parent.glob("out.jsonl.part-*"))
    one_line(script(SAMPLE, "--model", bad, "--prompt", "hi", monkeypatch=monkeypatch), str(bad), "not finite")


# -----------------------------------------------------------------------------
# kind: a stop that gives advice gives advice that works


def test_a_run_whose_lr_blows_up_names_the_checkpoint_to_continue_from_and_resume_takes_it(work, tmp_path):
    """lr warms up to 1e38: step 2's update leaves finite weights that give a NaN loss at step 3. The stop names
    step_000001 (the last whose weights gave a finite loss; kept from pruning with keep_checkpoints=1), marks
    step_000002, and --resume with a sane lr continues from step 1 into a finished run equal to one that had that lr
    from step 2 on."""
    d, model = work
    run, sane = tmp_path / "run", tmp_path / "sane"
    base = dict(out_dir=run, resume=False, dev="", bounds="", mixture="static", max_steps=4, save_interval=1,
                eval_interval=1, keep_checkpoints=1, warmup_steps=3)
    with pytest.raises(SystemExit) as e:
        train.main(train_args(model, d, lr=1e38, **base))
    one_line(str(e.value), "loss nan", "at step 3", f"is {run / 'step_000001'}", "--resume")
    assert [c.name for c in checkpoint.checkpoints(run)] == ["step_000001", "step_000002"]
    assert not checkpoint.read_state(run / "step_000002")["finite"]
    train.main(train_args(model, d, lr=1e-3, **{**base, "resume": True}))
    train.main(train_args(model, d, lr=1e38, **{**base, "out_dir": sane, "max_steps": 1}))
    train.main(train_args(model, d, lr=1e-3, **{**base, "out_dir": sane, "resume": True}))
    assert metrics_of(run)[-1] == metrics_of(sane)[-1]
    assert all(torch.equal(a, b) for a, b in zip(load_file(str(run / "step_000004" / "model.safetensors")).values(),
                                               load_file(str(sane / "step_000004" / "model.safetensors")).values()))


def metrics_of(run):
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "tok_per_s", "eval_time")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


# -----------------------------------------------------------------------------
# kind: resume and append are content-addressed


@pytest.mark.parametrize("changed", ["system1", "dev", "bounds", "model"])
def test_a_resumed_run_refuses_an_input_whose_content_changed_and_takes_one_moved(work, tmp_path, changed):
    d, model = work
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    files = {"system1": d / "s1.jsonl", "dev": d / "problems.jsonl", "bounds": d / "bounds.json", "model": model}
    moved = tmp_path / "moved" / files[changed].name
    moved.parent.mkdir()
    (shutil.copytree if changed == "model" else shutil.copy)(files[changed], moved)
    over = {changed: moved, "system2": moved if changed == "system1" else d / "s1.jsonl"}
    train.main(train_args(over.pop("model", model), d, out_dir=run, max_steps=3, **over))  # moved, the same content
    if changed == "model":
        edited = model_with(tmp_path, model, "edited", tensors={"model.norm.weight": lambda t: t * 1.5})
        shutil.rmtree(moved)
        shutil.copytree(edited, moved)
    else:
        moved.write_text(moved.read_text().replace("40" if changed == "bounds" else "1", "41" if changed == "bounds"
                                                   else "7"))  # the same size, another content
    refused(train.main, train_args(moved if changed == "model" else model, d, out_dir=run, max_steps=4, **over),
            f"the run began with {changed}", run)


@pytest.mark.parametrize("setting", ["eta=2.0", "mixture=static", "global_batch=8", "seed=3", "loss_norm=token",
                                     "w_short=0.9", "max_len=150", "c=0.5"])
def test_changed_settings_on_resume_end_in_one_line(work, tmp_path, setting):
    d, model = work
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    key, value = setting.split("=")
    with pytest.raises(SystemExit) as e:
        train.main(train_args(model, d, out_dir=run, max_steps=4, **{key: value}))
    one_line(str(e.value), f"resumed with settings other than its run's ({key} ", "model=")


def test_settings_that_only_change_what_comes_next_may_change_on_resume(work, tmp_path, capsys):
    d, model = work
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    train.main(train_args(model, d, out_dir=run, max_steps=3, lr=2e-3, keep_checkpoints=3))
    assert "resuming from" in capsys.readouterr().out and (run / "step_000003").is_dir()


def test_a_sampling_output_refuses_weights_changed_in_place(work, tmp_path, monkeypatch):
    """Re-trained or edited weights of the same size and path: the output's stamp (model_digest: header and sampled
    content, not sizes) differs, so a rerun appends nothing made by another model."""
    d, model = work
    copy = model_with(tmp_path, model, "m")
    out = tmp_path / "o" / "out.jsonl"
    argv = ["--model", copy, "--prompts", d / "problems.jsonl", "--out", out, "--max_new_tokens", "4"]
    SAMPLE([str(a) for a in argv])
    edited = model_with(tmp_path, model, "edited", tensors={"model.layers.0.mlp.down_proj.weight": lambda t: -t})
    shutil.copy(edited / "model.safetensors", copy / "model.safetensors")  # the same size
    refused(SAMPLE, argv, "made otherwise (model: ", out.parent)


# -----------------------------------------------------------------------------
# kind: an output never overwrites its own input (the same path, a link to it, a hard link)


@pytest.mark.parametrize("how", ["same", "hard link"])
def test_no_script_writes_over_what_it_reads(work, tmp_path, how, monkeypatch):
    d, model = work
    src = tmp_path / "in" / "problems.jsonl"
    src.parent.mkdir()
    shutil.copy(d / "problems.jsonl", src)
    target = src if how == "same" else tmp_path / "in" / "alias.jsonl"
    if how == "hard link":
        os.link(src, target)
    graded = tmp_path / "in" / "graded.jsonl"
    shutil.copy(d / "out.jsonl", graded)
    for module, argv, what in [
        (SAMPLE, ["--model", model, "--prompts", src, "--out", target], "the output"),
        (build, ["dev", "--problems", src, "--size", "2", "--out", target], "--out"),
        (build, ["system2", "--model", model, "--problems", tmp_path / "in" / "x.samples.jsonl", "--out",
                 tmp_path / "in" / "x.jsonl"], "the output"),
        (evaluate, ["--model", model, "--bench", src, "--out_dir", src.parent], "the output"),
        (grade, [graded, "--out", graded], "--out"),
        (train, train_args(model, d, out_dir=tmp_path / "run", system1=tmp_path / "run" / "metrics.jsonl",
                           resume=False), "system1"),
    ]:
        if "x.samples.jsonl" in str(argv):
            shutil.copy(src, tmp_path / "in" / "x.samples.jsonl")
        if module is train:
            (tmp_path / "run").mkdir(exist_ok=True)
            shutil.copy(d / "s1.jsonl", tmp_path / "run" / "metrics.jsonl")
        before = snapshot(tmp_path / "in", tmp_path / "run")
        one_line(script(module, *argv, monkeypatch=monkeypatch), what, "an output never overwrites what the command "
                 "reads", where=getattr(module, "__name__", "sample"))
        assert snapshot(tmp_path / "in", tmp_path / "run") == before, getattr(module, "__name__", "sample")


def test_two_benchmarks_under_one_name_are_refused(work, tmp_path, monkeypatch):
    d, model = work
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(d / "problems.jsonl", tmp_path / "a" / "mine.jsonl")
    shutil.copy(d / "problems.jsonl", tmp_path / "b" / "mine.jsonl")
    one_line(script(evaluate, "--model", model, "--bench", f"{tmp_path / 'a' / 'mine.jsonl'},"
                    f"{tmp_path / 'b' / 'mine.jsonl'}", "--out_dir", tmp_path / "e", monkeypatch=monkeypatch),
             "two benchmarks are named mine")
    one_line(script(evaluate, "--model", model, "--bench", d / "problems.jsonl", "--out_dir", tmp_path / "e",
                    "--compare", tmp_path / "e" / "summary.json", monkeypatch=monkeypatch), "--compare")


# -----------------------------------------------------------------------------
# kind: bounded memory on hostile sizes


def test_a_line_over_the_limit_is_refused_with_its_number_for_every_reader(work, tmp_path, monkeypatch):
    """JSON Lines stream with a per-line limit (common.MAX_LINE_BYTES, 64 MiB; 4 KiB here): a problems file, a
    training file and a sampling output with one huge line are refused with the file and line."""
    import common
    d, model = work
    monkeypatch.setattr(common, "MAX_LINE_BYTES", 4096)
    huge = json.dumps({"id": "big", "problem": "x" * 5000, "answer": "1"}) + "\n"
    big = tmp_path / "big.jsonl"
    big.write_text((d / "problems.jsonl").read_text() + huge)
    for module, argv in [(SAMPLE, ["--model", model, "--prompts", big, "--out", tmp_path / "o.jsonl"]),
                         (evaluate, ["--model", model, "--bench", big, "--out_dir", tmp_path / "e"]),
                         (train, train_args(model, d, out_dir=tmp_path / "run", dev=big, resume=False))]:
        one_line(script(module, *argv, monkeypatch=monkeypatch), f"{big}:5: a line of more than",
                 where=getattr(module, "__name__", "sample"))
    out = tmp_path / "out.jsonl"
    shutil.copy(d / "out.jsonl", out)
    shutil.copy(d / "out.settings.json", tmp_path / "out.settings.json")
    with open(out, "a") as f:
        f.write(json.dumps({"id": "p0", "sample": 9, "response": "y" * 5000, "tokens": 1, "finish": "stop"}) + "\n")
    one_line(script(SAMPLE, "--model", model, "--prompts", d / "problems.jsonl", "--out", out, "--samples", "2",
                    "--max_new_tokens", "6", "--temperature", "0.7", monkeypatch=monkeypatch), f"{out}:9: a line of")


def test_an_example_or_prompt_far_over_the_context_is_skipped_from_its_bytes_untokenized(work, tmp_path, monkeypatch,
                                                                                        capsys):
    d, model = work
    huge = "7 + " * 200_000
    seen = []
    for module in (train, prompts):
        real = module.example_ids if module is train else module.prompt_ids
        monkeypatch.setattr(module, "example_ids" if module is train else "prompt_ids",
                            lambda tok, problem, *a, real=real: seen.append(len(problem)) or real(tok, problem, *a))
    s1 = write_jsonl(tmp_path / "s1.jsonl", [{"problem": huge, "response": "x"}, {"problem": "1+1", "response": "2"}])
    train.main(train_args(model, d, out_dir=tmp_path / "run", system1=s1, system2=s1, resume=False, dev="",
                          bounds="", mixture="static", max_steps=1, save_interval=1))
    assert "skipped 1 of 2 examples longer than max_len=200" in capsys.readouterr().out
    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "big", "problem": huge}, {"id": "ok", "problem": "1+1"}])
    SAMPLE([str(a) for a in ["--model", model, "--prompts", problems, "--out", tmp_path / "o.jsonl",
                             "--max_new_tokens", "3"]])
    assert "skipped 1 prompt(s) longer than the context" in capsys.readouterr().err
    assert max(seen) < 100  # the huge texts never reached the tokenizer


# -----------------------------------------------------------------------------
# kind: interrupts (Ctrl-C, SIGTERM) end in one line saying what is kept; the rerun is exact


def interrupt(argv, signum, after: str, tmp_path):
    """Run a script, send it `signum` once its output shows `after`, and return (exit code, stderr)."""
    import time
    p = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = ""
    for line in p.stdout:
        seen += line
        if after in line:
            time.sleep(0.2)
            p.send_signal(signum)
            break
    rest = p.communicate(timeout=120)[0]
    return p.returncode, seen + rest


def test_ctrl_c_and_sigterm_end_in_one_line_and_the_rerun_is_exact(work, tmp_path):
    import signal
    d, model = work
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = lambda out, resume=False: train_args(model, d, out_dir=out, max_steps=16, save_interval=2,
                                                eval_interval=16, resume=resume)
    train.main(args(full))
    code, output = interrupt(["train.py", *args(cut)], signal.SIGTERM, "step 3/16", tmp_path)
    assert code == 130 and "Traceback" not in output, output[-2000:]
    assert output.strip().splitlines()[-1].startswith("interrupted: the checkpoints written so far are kept")
    train.main(args(cut, resume=True))
    assert all(torch.equal(a, b) for a, b in zip(load_file(str(full / "step_000016" / "model.safetensors")).values(),
                                                 load_file(str(cut / "step_000016" / "model.safetensors")).values()))
    out = tmp_path / "s" / "out.jsonl"
    sampling = ["--model", model, "--prompts", d / "problems.jsonl", "--samples", "16", "--max_new_tokens", "24",
                "--temperature", "0.7", "--batch_size", "2"]
    code, output = interrupt(["sample.py", *sampling, "--out", out], signal.SIGINT, "kv cache", tmp_path)
    assert code == 130 and "Traceback" not in output, output[-2000:]
    assert output.strip().splitlines()[-1] == "interrupted: every completion written so far is kept; the same " \
                                              "command continues from them"
    SAMPLE([str(a) for a in [*sampling, "--out", out]])
    SAMPLE([str(a) for a in [*sampling, "--out", tmp_path / "whole.jsonl"]])
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
