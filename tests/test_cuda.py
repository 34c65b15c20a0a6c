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


def fake_gpu_python(tmp_path, prelude: str) -> Path:
    """An interpreter that runs `python -c CODE` after a prelude faking what this machine is not."""
    fake = tmp_path / "python-faked"
    (tmp_path / "prelude.py").write_text(prelude)
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -c "exec(open(\'{tmp_path}/prelude.py\').read()); '
                    f'import sys; exec(sys.argv[1])" "$2"\n')
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("has_flash", [False, True])
def test_the_recipe_stops_on_a_gpu_machine_without_flash_attn(tmp_path, has_flash):
    """make reproduce-7b/14b run `make gpu-ready` first: on a CUDA machine (faked here) without flash-attn it stops
    with the command that installs it, and with flash-attn (faked too) it lets the recipe go on, whatever this
    machine has; on a machine without CUDA it lets the recipe go on."""
    spec = "object()" if has_flash else "None"
    fake = fake_gpu_python(tmp_path, "import importlib.util, torch\ntorch.cuda.is_available = lambda: True\n"
                           f"find = importlib.util.find_spec\nimportlib.util.find_spec = lambda name, *a: "
                           f"{spec} if name == 'flash_attn' else find(name, *a)\n")
    p = subprocess.run(["make", "-s", "gpu-ready", f"PY={fake}"], cwd=ROOT, capture_output=True, text=True)
    if has_flash:
        assert p.returncode == 0, p.stdout + p.stderr
    else:
        assert p.returncode != 0 and "flash-attn is not installed; run: make gpu-install" in p.stdout
    if not torch.cuda.is_available():
        assert subprocess.run(["make", "-s", "gpu-ready", f"PY={sys.executable}"], cwd=ROOT).returncode == 0


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
    prelude = (f"import torch\ntorch.version.cuda = {torch_cuda!r}\ntorch.cuda.device_count = lambda: {len(gpus)}\n"
               f"torch.cuda.get_device_capability = lambda i=0: {gpus!r}[i]\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([str(fake_gpu_python(tmp_path, prelude)), "-c", cuda_build_check()], capture_output=True,
                       text=True, env=env)
    if expect.startswith("error"):
        assert p.returncode != 0 and re.search(expect, p.stderr), p.stderr
    else:
        assert p.returncode == 0 and p.stdout.strip() == expect, p.stderr
