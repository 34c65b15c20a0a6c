"""What only a GPU can show (make gpu-check runs the same checks and prints them as bench lines). Skipped without
CUDA; the last test runs the same code on CPU with a tiny model, so that the checks themselves are known to run."""
import os
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
def test_two_identical_training_runs_end_with_the_same_weights(models):
    """flash-attn's deterministic backward (model.py asks for it): a resumed run repeats the uninterrupted one."""
    with bench.group_of_one(torch.device("cuda")):
        repeat = bench.gpu_repeat(models[0], torch.device("cuda"), 8192)
    assert repeat["ours"][1] == 0 and repeat["ours"][0] < 1.5 * repeat["reference"][0]


@cuda
def test_training_peak_memory_within_the_plan(models):
    with bench.group_of_one(torch.device("cuda")):
        results, planned, _ = bench.gpu_training(models[0], torch.device("cuda"), 8192)
    assert abs(results["ours"][1] - planned) <= 0.2 * planned


def test_gpu_checks_run_on_cpu_with_a_tiny_model(tmp_path, capsys):
    """The code of every GPU check, on CPU with a tiny model: the numbers mean nothing here, but a check that does
    not run would otherwise only be found on the first GPU."""
    shape = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128)
    bench.gpu_check(tmp_path, torch.device("cpu"), tokens=256, shape={**shape, "vocab_size": 512}, small=shape)
    out = capsys.readouterr().out
    names = re.findall(r"^bench (\w+): ours .+, reference .+, ratio .+x$", out, re.M)
    assert names == ["logits_bf16", "greedy_fp32", "greedy_bf16", "fsdp_world1", "prefill_b1", "decode_b1",
                     "prefill_b64", "decode_b64", "train_mfu", "plan_memory", "deterministic_bwd", "train_repeat"]
    assert "bench greedy_fp32: ours 8 " in out and "bench fsdp_world1: ours 0 " in out
    assert "bench train_repeat: ours 0 " in out  # (on CPU both sides repeat exactly)


def fake_gpu_python(tmp_path, prelude: str) -> Path:
    """An interpreter that runs `python -c CODE` after a prelude faking what this machine is not."""
    fake = tmp_path / "python-faked"
    (tmp_path / "prelude.py").write_text(prelude)
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -c "exec(open(\'{tmp_path}/prelude.py\').read()); '
                    f'import runpy, sys; sys.argv = sys.argv[1:]; exec(sys.argv[1]) if sys.argv[0] == \'-c\' else '
                    f'runpy.run_path(sys.argv[0], run_name=\'__main__\')" "$@"\n')
    fake.chmod(0o755)
    return fake


def gpu_machine(tmp_path, driver=None, torch_sees=False, torch_cuda="13.0", flash=None) -> dict:
    """A faked machine for make gpu-ready / gpu-check: nvidia-smi listing two GPUs with `driver` (none: no
    nvidia-smi), torch seeing them or not and built for `torch_cuda`, and flash-attn absent (None), importable
    ("ok") or installed but broken ("broken": its compiled part fails to load, as a build for another torch
    does). Returns make's arguments and environment."""
    bin_dir, site = tmp_path / "bin", tmp_path / "site"
    bin_dir.mkdir()
    if driver:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho {driver}\necho {driver}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    if flash:
        (site / "flash_attn").mkdir(parents=True)
        (site / "flash_attn" / "__init__.py").write_text(
            "__version__ = '2.8.3'\n" if flash == "ok" else
            "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi', "
            "name='flash_attn_2_cuda')\n")
    prelude = (f"import torch\ntorch.cuda.is_available = lambda: {torch_sees}\n"
               f"torch.version.cuda = {torch_cuda!r}\n")
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(site)}
    return {"args": [f"PY={fake_gpu_python(tmp_path, prelude)}"], "env": env}


def gpu_make(target, machine):
    return subprocess.run(["make", "-s", target, *machine["args"]], cwd=ROOT, capture_output=True, text=True,
                          env=machine["env"], timeout=120)


@pytest.mark.parametrize("driver, torch_cuda, expect", [
    ("550.54.15", "13.0", "driver 550.54.15, but this torch .* is built for CUDA 13.0, which needs NVIDIA driver 580 "
                          "or newer: it cannot use them. install the torch built for this driver: .venv/bin/pip "
                          r"install torch==\S+ --index-url https://download.pytorch.org/whl/cu126, then make gpu-install"),
    ("470.82.01", "13.0", r"needs NVIDIA driver 580 or newer: .* update the NVIDIA driver \(525.60 or newer\)"),
    ("580.65.06", None, "is a CPU build: it cannot use them. .*whl/cu130, then make gpu-install"),
])
def test_gpus_torch_cannot_use_stop_the_recipe_and_the_gpu_check_with_the_fix(tmp_path, driver, torch_cuda, expect):
    """nvidia-smi lists GPUs but torch cannot use them (2.13's default wheels are CUDA 13.0: an older driver leaves
    is_available() False): make gpu-ready stops the recipe and make gpu-check stops too, never "skipped", both
    naming the driver, torch's CUDA and the wheel index that fits."""
    machine = gpu_machine(tmp_path, driver=driver, torch_cuda=torch_cuda)
    for target in ("gpu-ready", "gpu-check")[:2 if driver.startswith("550") else 1]:  # (the same message)
        p = gpu_make(target, machine)
        assert p.returncode != 0 and re.search("error: nvidia-smi lists 2 GPU" + ".*" + expect, p.stderr), p.stderr
        assert "skipped" not in p.stdout + p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("flash, ok, message", [
    (None, False, "this machine has CUDA GPUs but flash-attn is not installed; run: make gpu-install"),
    ("broken", False, "flash-attn is installed but does not import (ImportError: flash_attn_2_cuda.so: undefined "
                      "symbol"),
    ("ok", True, ""),
])
def test_the_recipe_needs_a_flash_attn_that_imports_on_a_gpu_machine(tmp_path, flash, ok, message):
    """make reproduce-7b/14b run `make gpu-ready` first: on a CUDA machine (faked) without flash-attn, or with one
    that is installed but does not import, it stops with the fix; with flash-attn it lets the recipe go on."""
    p = gpu_make("gpu-ready", gpu_machine(tmp_path, driver="580.65.06", torch_sees=True, flash=flash))
    assert (p.returncode == 0) == ok and message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_a_machine_without_gpus_is_ready_and_its_gpu_check_skips(tmp_path):
    machine = gpu_machine(tmp_path)  # no nvidia-smi, no CUDA
    assert gpu_make("gpu-ready", machine).returncode == 0
    p = gpu_make("gpu-check", machine)
    assert p.returncode == 0 and "gpu-check: skipped: no GPU here" in p.stdout, p.stderr


def cuda_build_check() -> str:
    """The Makefile's CUDA_BUILD_CHECK, as make hands it to python."""
    text = (ROOT / "Makefile").read_text()
    script = text.split("define CUDA_BUILD_CHECK\n", 1)[1].split("\nendef", 1)[0]
    return script.replace("$(VENV)", ".venv").replace("$$", "$")


@pytest.mark.parametrize("torch_cuda, nvcc, gpus, expect", [
    ("12.8", "12.4", [(9, 0)], "90"),                     # an H100/H200: one architecture, not four
    ("12.8", "12.8", [(8, 0), (8, 9), (9, 0)], "80;90"),  # every 8.x GPU runs the sm80 build
    ("12.8", "12.8", [], "80;90"),                        # no GPU visible (a build node)
    ("12.8", "11.8", [(9, 0)], "error: .*nvcc is CUDA 11.8 but torch was built with CUDA 12.8"),
    ("12.8", None, [(9, 0)], "error: no nvcc on PATH"),
    (None, "12.8", [(9, 0)], "error: the torch in .venv is a CPU build"),
])
def test_gpu_install_builds_for_this_gpu_and_stops_on_a_missing_or_mismatched_nvcc(tmp_path, torch_cuda, nvcc,
                                                                                   gpus, expect):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvcc:
        (bin_dir / "nvcc").write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {nvcc}, V{nvcc}.1'\n")
        (bin_dir / "nvcc").chmod(0o755)
    # a stand-in torch module with what the check reads (importing torch itself would take seconds per case)
    prelude = (f"import sys, types\ntorch = sys.modules['torch'] = types.ModuleType('torch')\n"
               f"torch.version = types.SimpleNamespace(cuda={torch_cuda!r})\ntorch.cuda = types.SimpleNamespace("
               f"device_count=lambda: {len(gpus)}, get_device_capability=lambda i=0: {gpus!r}[i])\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([str(fake_gpu_python(tmp_path, prelude)), "-c", cuda_build_check()], capture_output=True,
                       text=True, env=env)
    if expect.startswith("error"):
        assert p.returncode != 0 and re.search(expect, p.stderr), p.stderr
    else:
        assert p.returncode == 0 and p.stdout.strip() == expect, p.stderr
