"""What only a GPU can show (make gpu-check runs the same checks and prints them as bench lines). Skipped without
CUDA; the last test runs the same code on CPU with a tiny model, so that the checks themselves are known to run."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: run `make gpu-check` on a GPU")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import tiny
    d = tmp_path_factory.mktemp("gpu")
    s = bench.GPU_SHAPE
    big = tiny.make_model(d / "big", "qwen2", vocab_size=s["vocab_size"], hidden=s["hidden"], layers=s["layers"],
                          heads=s["heads"], kv_heads=s["kv_heads"], intermediate=s["intermediate"], context=16384)
    small = tiny.make_model(d / "small", "qwen2", hidden=256, layers=4, heads=4, kv_heads=2, intermediate=512,
                            context=4096, init_std=0.3)
    return big, small


@cuda
def test_bf16_logits_as_close_to_fp32_as_transformers(models):
    ours, theirs = bench.gpu_logits(models[0], torch.device("cuda"))
    assert ours <= 2 * theirs


@cuda
def test_greedy_tokens_match_transformers(models):
    identical, ours_bf16, theirs_bf16 = bench.gpu_greedy(models[1], torch.device("cuda"))
    assert identical == 8 and ours_bf16 >= 0.5 * theirs_bf16


@cuda
def test_fsdp_in_a_group_of_one_equals_the_unsharded_model(models):
    with bench.group_of_one(torch.device("cuda")):
        loss_diff, param_diff = bench.gpu_fsdp_steps(models[1], torch.device("cuda"))
    assert loss_diff < 1e-4 and param_diff < 1e-4


@cuda
@pytest.mark.parametrize("batch", [1, 64])
def test_generation_is_faster_than_transformers(models, batch):
    speed = bench.gpu_speed(models[0], torch.device("cuda"), batch)
    assert speed["ours"][1] > speed["reference"][1]


@cuda
def test_training_peak_memory_within_the_plan(models):
    with bench.group_of_one(torch.device("cuda")):
        results, planned, _ = bench.gpu_training(models[0], torch.device("cuda"), 8192)
    assert abs(results["ours"][1] - planned) <= 0.2 * planned


def test_gpu_check_skips_cleanly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make gpu-check runs for real")
    p = subprocess.run([sys.executable, "bench.py", "--gpu"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "gpu-check: skipped: no CUDA device" in p.stdout


def test_gpu_checks_run_on_cpu_with_a_tiny_model(tmp_path, capsys):
    """The code of every GPU check, on CPU with a tiny model: the numbers mean nothing here, but a check that does
    not run would otherwise only be found on the first GPU."""
    bench.gpu_check(tmp_path, torch.device("cpu"), tokens=256, shape=dict(
        hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab_size=512))
    out = capsys.readouterr().out
    names = re.findall(r"^bench (\w+): ours .+, reference .+, ratio .+x$", out, re.M)
    assert names == ["logits_bf16", "greedy_fp32", "greedy_bf16", "fsdp_world1", "prefill_b1", "decode_b1",
                     "prefill_b64", "decode_b64", "train_mfu", "plan_memory"]
    assert "bench greedy_fp32: ours 8 " in out and "bench fsdp_world1: ours 0 " in out


def test_the_recipe_stops_on_a_gpu_machine_without_flash_attn(tmp_path):
    """make reproduce-7b/14b run `make gpu-ready` first: on a CUDA machine (faked here) without flash-attn it stops
    with the command that installs it; on this CPU machine it lets the recipe go on."""
    fake = tmp_path / "python-with-a-gpu"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -c "import sys, torch; torch.cuda.is_available = lambda: True; '
                    f'exec(sys.argv[1])" "$2"\n')
    fake.chmod(0o755)
    p = subprocess.run(["make", "-s", "gpu-ready", f"PY={fake}"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "flash-attn is not installed; run: make gpu-install" in p.stdout
    if not torch.cuda.is_available():
        assert subprocess.run(["make", "-s", "gpu-ready", f"PY={sys.executable}"], cwd=ROOT).returncode == 0
