"""train.py: completion-only loss, accumulation, FSDP2 against one process, exact resume, the mixture rule,
and the failure paths."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import model as M
import prompts as P
import tiny
import checkpoint
import processes
import train
from common import read_settings
from ratio import Bounds

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time", "tok_per_s", "eval_time")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random model, System-1 (short) and System-2 (long, widely varied) sets, a dev set, bounds."""
    d = tmp_path_factory.mktemp("train")
    tiny.make_model(d / "model", "qwen2", seed=0)
    s1 = [{"problem": f"{a}+{b}", "response": f"</think>\n\n\\boxed{{{a + b}}}"}
          for a in range(1, 9) for b in range(1, 6)]
    s2 = [{"problem": f"{a}*{b}", "response": f"{a} times {b}. " + "Wait, let me check. " * ((a * b) % 9)
           + f"</think>\n\n\\boxed{{{a * b}}}"} for a in range(1, 9) for b in range(1, 6)]
    write_jsonl(d / "s1.jsonl", s1)
    write_jsonl(d / "s2.jsonl", s2)
    write_jsonl(d / "dev.jsonl", [{"id": i, "problem": f"{i}+1", "answer": str(i + 1)} for i in range(4)])
    sampling = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 12}
    (d / "bounds.json").write_text(Bounds(10, 0.1, 40, 0.6).to_json(sampling=sampling))
    return d


def args(d, out, **over):
    base = dict(model=d / "model", system1=d / "s1.jsonl", system2=d / "s2.jsonl", dev=d / "dev.jsonl",
                bounds=d / "bounds.json", out_dir=out, max_steps=6, global_batch=8, row_tokens=400, max_len=400,
                eval_interval=3, save_interval=3, dev_max_new_tokens=12, lr=1e-3)
    base.update(over)
    return [f"--{k}={v}" for k, v in base.items()]


def metrics(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


def grads(model, rows, n_target):
    model.zero_grad()
    for row in rows:
        (model(*row[:2], targets=row[2]) / n_target).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_loss_is_completion_only(setup):
    tok = checkpoint.load_tokenizer(setup / "model")
    examples = train.load_examples(setup / "s2.jsonl", tok, 400, "system2")[:3]
    ids, pos, tgt, _ = train.make_row(examples, "cpu")
    m = M.Transformer.from_pretrained(setup / "model")
    with torch.no_grad():
        logits = m.lm_head(m(ids, pos))[0]
    want, start = 0.0, 0
    for seq, n_prompt in examples:  # by hand: predict token j+1 from position j, for completion tokens only
        for j in range(n_prompt - 1, len(seq) - 1):
            want -= torch.log_softmax(logits[start + j], -1)[seq[j + 1]].item()
        assert (tgt[0, start:start + n_prompt - 1] == -100).all() and tgt[0, start + len(seq) - 1] == -100
        start += len(seq)
    assert m(ids, pos, targets=tgt).item() == pytest.approx(want, rel=1e-5)
    # the prompt's tokens are never targets: changing them changes no target
    assert (tgt != -100).sum() == sum(len(s) - n for s, n in examples)


def test_accumulation_and_checkpointing_give_equal_gradients(setup):
    tok = checkpoint.load_tokenizer(setup / "model")
    examples = train.load_examples(setup / "s2.jsonl", tok, 400, "system2")[:8]
    n_target = sum(train.completion_tokens(e) for e in examples)
    m = M.Transformer.from_pretrained(setup / "model").train()
    one = train.split_and_pack(examples, 1, 10_000)[0]
    four = train.split_and_pack(examples, 1, sum(len(e[0]) for e in examples) // 4 + 60)[0]
    assert len(one) == 1 and len(four) == 4
    rows = lambda plan: [train.make_row([examples[i] for i in r], "cpu") for r in plan]
    g1 = grads(m, rows(one), n_target)
    g4 = grads(m, rows(four), n_target)
    m.gradient_checkpointing, m.loss_chunk = True, 7  # recomputed blocks, the loss in many chunks
    g_ckpt = grads(m, rows(four), n_target)
    for k in g1:
        assert torch.allclose(g1[k], g4[k], rtol=1e-4, atol=1e-6), k
        assert torch.allclose(g4[k], g_ckpt[k], rtol=1e-4, atol=1e-6), k


def scaled_grads(model, examples, plan, scales):
    model.zero_grad()
    for r in plan:
        ids, pos, tgt, wts = train.make_row([examples[i] for i in r], "cpu", [scales[i] for i in r])
        model(ids, pos, targets=tgt, scale=wts).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("loss_norm,group", [("sequence", 1), ("group", 4), ("token", 8)])
def test_loss_norm_weighs_examples_as_the_official_runs(setup, loss_norm, group):
    """sequence: the mean of the examples' own mean-token-loss gradients (the official 7B objective); group: the
    mean over groups of 4 of each group's token mean (14B); token: the summed loss over the batch's completion
    tokens. The same whether the batch is one row or four."""
    tok = checkpoint.load_tokenizer(setup / "model")
    examples = train.load_examples(setup / "s2.jsonl", tok, 400, "system2")[:8]
    assert len({train.completion_tokens(e) for e in examples}) > 4  # lengths differ: the norms differ
    m = M.Transformer.from_pretrained(setup / "model").train()
    scales = train.token_scales(examples, loss_norm, 4)
    assert sum(s * train.completion_tokens(e) for s, e in zip(scales, examples)) == pytest.approx(1.0)
    one = train.split_and_pack(examples, 1, 10_000)[0]
    four = train.split_and_pack(examples, 1, sum(len(e[0]) for e in examples) // 4 + 60)[0]
    g_one, g_four = scaled_grads(m, examples, one, scales), scaled_grads(m, examples, four, scales)
    # by hand: each group's summed loss over its own completion tokens, averaged over the groups
    groups = [examples[g:g + group] for g in range(0, 8, group)]
    want = {k: torch.zeros_like(p) for k, p in m.named_parameters()}
    for members in groups:
        rows = [train.make_row([e], "cpu") for e in members]
        g = grads(m, rows, sum(train.completion_tokens(e) for e in members))
        for k in want:
            want[k] += g[k] / len(groups)
    for k in want:
        assert torch.allclose(g_one[k], want[k], rtol=1e-4, atol=1e-7), k
        assert torch.allclose(g_four[k], want[k], rtol=1e-4, atol=1e-7), k
    if loss_norm != "token":  # and it is not the token mean
        token = scaled_grads(m, examples, one, train.token_scales(examples, "token", 0))
        assert not all(torch.allclose(token[k], want[k], rtol=1e-2) for k in want)


def test_split_and_pack_is_balanced_and_complete():
    examples = [([0] * n, 1) for n in (50, 10, 300, 7, 120, 120, 64, 5)]
    plans = train.split_and_pack(examples, 2, 310)
    flat = sorted(i for plan in plans for row in plan for i in row)
    assert flat == list(range(len(examples)))
    for plan in plans:
        assert all(sum(len(examples[i][0]) for i in row) <= 310 for row in plan)
    loads = [sum(len(examples[i][0]) for row in plan for i in row) for plan in plans]
    assert max(loads) - min(loads) <= 300


@pytest.mark.parametrize("world", [2, 4, 8])
def test_every_process_gets_exactly_its_share(world):
    """One 16k-token example and many short ones: by load alone the long one would sit alone on a process and
    the short ones crowd the others; each process takes exactly global_batch / world examples."""
    examples = [([0] * n, 1) for n in (16000, *range(20, 20 + 8 * 15, 8))]
    plans = train.split_and_pack(examples, world, 16384)
    assert [sum(len(row) for row in plan) for plan in plans] == [16 // world] * world
    assert sorted(i for plan in plans for row in plan for i in row) == list(range(16))


def test_lr_schedules_follow_hugging_face():
    """get_scheduler's lambdas at step - 1: linear warm-up from 0 (the first update at lr 0), then constant,
    linear to 0 at max_steps, or cosine; the official static arm: warm-up 20 of 2000 steps, then linear."""
    cfg = train.TrainConfig(lr=1e-5, lr_schedule="linear", warmup_steps=20, max_steps=2000)
    lambdas = {1: 0.0, 2: 1 / 20, 20: 19 / 20, 21: 1.0, 22: 1979 / 1980, 2000: 1 / 1980}
    for step, factor in lambdas.items():
        assert train.lr_at(cfg, step) == pytest.approx(1e-5 * factor, abs=1e-18), step
    cfg.lr_schedule, cfg.warmup_steps = "constant", 0
    assert {train.lr_at(cfg, s) for s in (1, 1000, 2000)} == {1e-5}
    cfg.lr_schedule, cfg.min_lr = "cosine", 0.0
    assert train.lr_at(cfg, 1) == 1e-5 and train.lr_at(cfg, 1001) == pytest.approx(5e-6)


def test_fsdp_two_processes_match_one(setup, tmp_path):
    """torchrun --nproc_per_node=2 (gloo, FSDP2) against a single process on the same global batches:
    same loss and gradient norm every step, same parameters at the end, same dev evaluation."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    train.main(args(setup, single))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29731",
                          str(ROOT / "train.py"), *args(setup, multi)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = metrics(single), metrics(multi)
    assert [m.keys() for m in a] == [m.keys() for m in b]
    for x, y in zip(a, b):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), (x["step"], k)
    wa, wb = weights(single / "step_000006"), weights(multi / "step_000006")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    assert sorted(p.name for p in (multi / "step_000006" / "train_state").glob("optimizer-*")) == [
        "optimizer-rank00000-of-00002.safetensors", "optimizer-rank00001-of-00002.safetensors"]


def test_resume_is_exact(setup, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train.main(args(setup, full))
    train.main(args(setup, split, max_steps=3))
    train.main(args(setup, split, resume=True))
    assert torch.equal(torch.cat([v.flatten() for v in weights(full / "step_000006").values()]),
                       torch.cat([v.flatten() for v in weights(split / "step_000006").values()]))
    assert metrics(full) == metrics(split)
    state = lambda out: json.loads((out / "step_000006" / "train_state" / "state.json").read_text())["mixture"]
    assert state(full) == state(split)
    # the checkpoint is a complete model directory: transformers loads it, and so does our generator with its
    # tokenizer and chat template
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(full / "step_000006")
    assert P.prompt_ids(checkpoint.load_tokenizer(full / "step_000006"), "1+1") == \
        P.prompt_ids(checkpoint.load_tokenizer(setup / "model"), "1+1")


def test_mixture_follows_the_rule(setup, tmp_path):
    out = tmp_path / "run"
    train.main(args(setup, out))
    evals = [m for m in metrics(out) if "dev_acc" in m]
    assert [e["step"] for e in evals] == [3, 6]
    w = (0.5, 0.5)
    for e in evals:  # recompute every update from the logged dev measurement, by the formulas
        b_short = max((e["dev_tokens"] - 10) / (40 - 10), 0)
        b_long = max((0.6 - e["dev_acc"]) / (0.6 - 0.1), 0)
        z = [w[0] * math.exp(4 * b_short), w[1] * math.exp(4 * b_long)]
        w = tuple((1 - 1e-4) * x / sum(z) + 1e-4 / 2 for x in z)
        assert (e["w_short"], e["w_long"]) == pytest.approx(w, rel=1e-9)
    steps = [m for m in metrics(out) if "loss" in m]
    assert steps[3]["w_short"] == evals[0]["w_short"]  # the next interval trains with the new weights
    # random model: accuracy 0 and outputs at the 12-token cap, so System-2 (accuracy) gains weight
    assert evals[0]["w_long"] > 0.5


def test_static_mixture_keeps_its_weights(setup, tmp_path):
    out = tmp_path / "static"
    train.main(args(setup, out, mixture="static", w_short=0.25))
    assert {(m["w_short"], m["w_long"]) for m in metrics(out) if "w_short" in m} == {(0.25, 0.75)}


def test_killed_checkpoint_write_keeps_the_previous_one(setup, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real, calls = checkpoint.write_weights, []

    def dies_second_time(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while writing the checkpoint")
        return real(*a, **k)
    monkeypatch.setattr(checkpoint, "write_weights", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        train.main(args(setup, out))
    assert [p.name for p in checkpoint.checkpoints(out)] == ["step_000003"]
    M.Transformer.from_pretrained(out / "step_000003")  # still loadable
    monkeypatch.setattr(checkpoint, "write_weights", real)
    train.main(args(setup, out, resume=True))
    reference = tmp_path / "reference"
    train.main(args(setup, reference))
    assert metrics(out) == metrics(reference)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(setup, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    real = train.lr_at
    monkeypatch.setattr(train, "lr_at", lambda cfg, step: float("nan") if step == 4 else real(cfg, step))
    with pytest.raises(SystemExit, match=r"at step 5: stopping before the update.*step_000003"):
        train.main(args(setup, out))
    assert [p.name for p in checkpoint.checkpoints(out)] == ["step_000003"]
    w = weights(out / "step_000003")
    assert all(torch.isfinite(t).all() for t in w.values())


def test_over_length_examples_are_skipped_and_counted(setup, tmp_path, capsys):
    tok = checkpoint.load_tokenizer(setup / "model")
    kept = train.load_examples(setup / "s2.jsonl", tok, 120, "system2")
    assert 0 < len(kept) < 40 and all(len(ids) <= 120 for ids, _ in kept)
    assert f"skipped {40 - len(kept)} of 40 examples longer than max_len=120" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ('{"problem": "1+1", "response": "2"}\n{"problem": "2+2", "response": \n', r"bad.jsonl:2: not valid JSON"),
    ('{"problem": "1+1", "response": "2"}\n{"problem": "2+2"}\n', r"bad.jsonl:2: missing field\(s\)"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n',
     "bad.jsonl:1: 'messages' must be a list of {'role', 'content'} strings with a user and an assistant"),
    ('\n\n', r"bad.jsonl: no usable system1 example"),
])
def test_bad_training_data_names_file_and_line(setup, tmp_path, text, message):
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(SystemExit, match=message):
        train.main(args(setup, tmp_path / "o", system1=tmp_path / "bad.jsonl"))


def test_chat_messages_format_renders_like_problem_response(setup, tmp_path):
    tok = checkpoint.load_tokenizer(setup / "model")
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "1+1"},
                                                        {"role": "assistant", "content": "</think>\n\n\\boxed{2}"}]}])
    write_jsonl(tmp_path / "plain.jsonl", [{"problem": "1+1", "response": "</think>\n\n\\boxed{2}"}])
    chat, plain = (train.load_examples(tmp_path / f"{n}.jsonl", tok, 400, "s") for n in ("chat", "plain"))
    assert chat == plain


def test_bounds_where_the_long_model_is_not_better(setup, tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"short": {"tokens": 10, "accuracy": 0.6},
                                                 "long": {"tokens": 40, "accuracy": 0.5}}))
    with pytest.raises(SystemExit, match="b.json.*long model must be more accurate"):
        train.main(args(setup, tmp_path / "o", bounds=tmp_path / "b.json"))


def test_bounds_measured_with_other_sampling_are_refused(setup, tmp_path):
    with pytest.raises(SystemExit, match="the bounds were measured with"):
        train.main(args(setup, tmp_path / "o", dev_temperature=1.0))


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "r.py").write_text('"""a recipe"""\nlr = 2e-5\nmax_steps = 10\nmixture = "static"\n'
                                   'activation_checkpointing = True\n')
    cfg = read_settings(train.TrainConfig, [str(tmp_path / "r.py"), "--max_steps=20", "--resume"])
    assert (cfg.lr, cfg.max_steps, cfg.mixture, cfg.activation_checkpointing, cfg.resume) == \
        (2e-5, 20, "static", True, True)
    with pytest.raises(SystemExit, match="unknown setting 'learning_rate'"):
        read_settings(train.TrainConfig, ["--learning_rate=1"])
    with pytest.raises(SystemExit, match="max_steps='ten' is not a int"):
        read_settings(train.TrainConfig, ["--max_steps=ten"])
    (tmp_path / "bad.py").write_text("lr = 1e-5\nimport os\n")
    with pytest.raises(SystemExit, match="bad.py:2: a config file holds only"):
        read_settings(train.TrainConfig, [str(tmp_path / "bad.py")])
    # base = "FILE": that file's lines first, then this file's; a loop or a base that is not a file name is refused
    (tmp_path / "big.py").write_text('"""r.py, longer"""\nbase = "r.py"\nmax_steps = 30\n')
    cfg = read_settings(train.TrainConfig, [str(tmp_path / "big.py")])
    assert (cfg.lr, cfg.max_steps, cfg.mixture) == (2e-5, 30, "static")
    (tmp_path / "loop.py").write_text('base = "loop.py"\n')
    with pytest.raises(SystemExit, match="loop.py: read again through its own base"):
        read_settings(train.TrainConfig, [str(tmp_path / "loop.py")])
    (tmp_path / "number.py").write_text('base = 7\n')
    with pytest.raises(SystemExit, match="number.py:1: base names a config file"):
        read_settings(train.TrainConfig, [str(tmp_path / "number.py")])
    (tmp_path / "gone.py").write_text('base = "nowhere.py"\n')
    with pytest.raises(SystemExit, match="nowhere.py: no such config file"):
        read_settings(train.TrainConfig, [str(tmp_path / "gone.py")])


def test_plain_sft_on_one_set(setup, tmp_path):
    """A static mixture with weight 0 on System-1 is plain SFT on System-2; the System-1 file may be left out."""
    out = tmp_path / "sft"
    train.main(args(setup, out, mixture="static", w_short=0.0, system1="", dev="", bounds="", max_steps=2,
                    save_interval=2))
    assert [m["system1"] for m in metrics(out)] == [0, 0]
    with pytest.raises(SystemExit, match="no system1 data"):
        train.main(args(setup, tmp_path / "o", mixture="static", w_short=0.5, system1="", dev="", bounds=""))


def test_old_checkpoints_are_pruned(setup, tmp_path):
    out = tmp_path / "prune"
    train.main(args(setup, out, save_interval=2, keep_checkpoints=1))
    # the latest, and the one before it: the one a run that diverges after the latest continues from
    assert [p.name for p in checkpoint.checkpoints(out)] == ["step_000004", "step_000006"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".lock"]  # no temporary directory left


def test_chosen_checkpoint_follows_the_official_rule():
    evals = [{"step": 3, "dev_tokens": 50, "dev_acc": 0.70, "saved": True},
             {"step": 6, "dev_tokens": 30, "dev_acc": 0.60, "saved": True},
             {"step": 9, "dev_tokens": 20, "dev_acc": 0.40, "saved": True},   # too inaccurate: 0.4 < 0.7 x 0.756
             {"step": 12, "dev_tokens": 10, "dev_acc": 0.70, "saved": False}]  # evaluated, but no checkpoint
    assert train.choose(evals, long_acc=0.756)["step"] == 6
    assert train.choose(evals[2:3], long_acc=0.756) is None


def test_bf16_training_runs_the_flash_call_sites(setup, tmp_path, monkeypatch):
    """dtype=bfloat16 on CPU: FSDP2 mixed precision in a group of one, as on a GPU, with flash-attn's call sites
    (training, and prefill and decode in the dev evaluation) through the stand-in, which rejects fp32 inputs."""
    import flash_standin
    sdpa, flash = tmp_path / "sdpa", tmp_path / "flash"
    train.main(args(setup, sdpa, dtype="bfloat16", max_steps=3))
    monkeypatch.setattr(M, "flash_attn", flash_standin)
    monkeypatch.setattr(M.Transformer, "attn_backend", "flash")
    train.main(args(setup, flash, dtype="bfloat16", max_steps=3))
    for a, b in zip(metrics(sdpa), metrics(flash)):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], rel=2e-2)
    assert [m["step"] for m in metrics(flash) if "dev_acc" in m] == [3]
    # the checkpoint keeps the base model's dtype (these tiny models are float32) with the float32 master weights
    assert {t.dtype for t in weights(flash / "step_000003").values()} == {torch.float32}
    # an fp32 forward does not pass the stand-in, as it would not pass the real kernel
    m = M.Transformer.from_pretrained(setup / "model")
    with pytest.raises(RuntimeError, match="only support fp16 and bf16"):
        m(torch.tensor([[1, 2, 3]]))


def test_bf16_checkpoints_resume_exactly(setup, tmp_path):
    """A bf16 base model (as R1-Distill is) gives bf16 checkpoints, loadable as they are, plus float32 master
    weights in train_state/, from which a resumed run continues bit for bit."""
    import shutil
    base = tmp_path / "bf16-model"
    M.Transformer.from_pretrained(setup / "model").save_pretrained(base, dtype=torch.bfloat16)
    for f in checkpoint.tokenizer_files(setup / "model"):
        shutil.copy2(f, base / f.name)
    full, split = tmp_path / "full", tmp_path / "split"
    train.main(args(setup, full, model=base))
    train.main(args(setup, split, model=base, max_steps=3))
    train.main(args(setup, split, model=base, resume=True))
    for out in (full, split):
        assert {t.dtype for t in weights(out / "step_000006").values()} == {torch.bfloat16}
        assert json.loads((out / "step_000006" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    master = lambda out: load_file(str(out / "step_000006" / "train_state" / "master-rank00000-of-00001.safetensors"))
    assert all(torch.equal(master(full)[k], master(split)[k]) for k in master(full))
    assert all(t.dtype == torch.float32 for t in master(full).values())
    assert metrics(full) == metrics(split)
    # without its master weights a bf16 checkpoint cannot continue exactly: a clear refusal, not a silent rounding
    (split / "step_000006" / "train_state" / "master-rank00000-of-00001.safetensors").unlink()
    with pytest.raises(SystemExit, match="cannot be resumed exactly"):
        train.main(args(setup, split, model=base, resume=True, max_steps=9))


def _load_shards(rank, world, store_path, model_dir, out):
    """One process of test_each_process_reads_only_its_shard."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(str(store_path), world), rank=rank, world_size=world)
    requests = []
    real = checkpoint.Weights.read
    checkpoint.Weights.read = lambda self, key, dtype, device, rows=None: requests.append((key, rows)) or \
        real(self, key, dtype, device, rows)
    proc = processes.Processes(rank, world, torch.device("cpu"), torch.float32, True)
    model = train.build_model(train.TrainConfig(), Path(model_dir), None, proc)
    full = {k: processes.full(v) for k, v in model.state_dict().items()}  # collective
    if rank == 0:
        torch.save({"requests": requests, "full": full}, out)
    dist.barrier()  # both leave together: a group torn down while the other process still uses it can abort it
    dist.destroy_process_group()


def test_each_process_reads_only_its_shard(setup, tmp_path):
    """Sharded loading: the model is built on the meta device and every process reads only the rows of its own
    FSDP2 shard of each tensor from the safetensors files, never a whole model; gathered back, it is the model."""
    import torch.multiprocessing as mp
    mp.start_processes(_load_shards, args=(2, tmp_path / "store", setup / "model", tmp_path / "rank0.pt"), nprocs=2,
                       start_method="spawn")
    got = torch.load(tmp_path / "rank0.pt", weights_only=True)
    ours = M.Transformer.from_pretrained(setup / "model")
    ref, config, expected = ours.state_dict(), ours.config, {}
    for name, shape in M.our_names(config).items():  # rank 0's half of the first dimension, nothing more: of a
        start, half = 0, -(-shape[0] // 2)           # fused tensor, the rows of each part that fall in that half
        for hf, n in checkpoint.hf_parts(config, name):
            if n is None or half > start:  # (a part outside the half is not read)
                expected[hf] = (0, half) if n is None else (0, min(half - start, n))
            start += n or 0
    assert dict(got["requests"]) == expected and len(got["requests"]) == len(expected)
    assert all(torch.equal(got["full"][k], ref[k]) for k in ref)


def _loss_weights_arrive(rank, world, store_path, model_dir, out):
    """One process of test_loss_weights_reach_the_loss_in_float32_under_bf16_fsdp: what scale= the loss sees."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(str(store_path), world), rank=rank, world_size=world)
    proc = processes.Processes(rank, world, torch.device("cpu"), torch.bfloat16, True)
    model = train.build_model(train.TrainConfig(), Path(model_dir), None, proc)
    seen = []
    real = M.ChunkedCrossEntropy.forward
    M.ChunkedCrossEntropy.forward = lambda ctx, h, w, t, scale, chunk: seen.append(scale.clone()) or \
        real(ctx, h, w, t, scale, chunk)
    ids = torch.arange(1, 13)[None]
    model(ids, torch.arange(12)[None], targets=ids, scale=torch.full((1, 12), 1 / 3000)).backward()
    if rank == 0:
        torch.save(seen, out)
    dist.barrier()
    dist.destroy_process_group()


def test_loss_weights_reach_the_loss_in_float32_under_bf16_fsdp(setup, tmp_path):
    """FSDP2's mixed precision casts a module's floating inputs to bf16; the per-token loss weights are one of the
    root's inputs: they must reach the loss as the float32 train.py made (1/3000 in bf16 is 1/2997.7)."""
    import torch.multiprocessing as mp
    mp.start_processes(_loss_weights_arrive, args=(2, tmp_path / "store", setup / "model", tmp_path / "seen.pt"),
                       nprocs=2, start_method="spawn")
    (scale,) = torch.load(tmp_path / "seen.pt", weights_only=True)
    assert scale.dtype == torch.float32 and torch.equal(scale, torch.full((12,), 1 / 3000))
