"""memory.py and plan.py: the memory plan as code, checked against the peaks torch's MemTracker measures on CPU for real
training steps of small models (one plain process, and FSDP2 over two gloo processes in bf16 mixed precision)."""
import contextlib
from pathlib import Path

import pytest
import torch

import model as M
import memory
import plan
import processes
import train

ROOT = Path(__file__).resolve().parents[1]
# big enough that every term of the plan matters (weights, optimizer, activations, the loss), small enough for CPU
SHAPE = dict(architectures=["Qwen2ForCausalLM"], vocab_size=8192, hidden_size=256, intermediate_size=768,
             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)


def settings(**over):
    cfg = train.TrainConfig(model="(test)", row_tokens=2048, activation_checkpointing=True)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def measured_peak(cfg, world, rank, dtype, sharded):
    """Peak bytes of this process over a training step (the second: AdamW's state exists), as MemTracker sees it."""
    from torch.distributed._tools.mem_tracker import MemTracker
    torch.manual_seed(0)
    config = M.Config.from_hf(SHAPE)
    model = M.Transformer(config)
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=0.02)  # (model.py leaves it uninitialised)
    model.inv_freq = M.rope_inv_freq(config)
    if sharded:
        processes.shard(model, dtype)
    model.train().gradient_checkpointing = cfg.activation_checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # a step of two full rows per process: the second row runs while the first one's gradients are kept
    rows = [[(torch.randint(0, 8000, (cfg.row_tokens,)).tolist(), 10) for _ in range(world)] for _ in range(2)]

    def row(examples):
        plans = train.split_and_pack(examples, world, cfg.row_tokens)
        scales = [s / 2 for s in train.token_scales(examples, "token", 0)]
        train.forward_backward(model, examples, scales, plans, rank, 0, torch.device("cpu"))

    for measured in (False, True):  # the first step creates AdamW's state; the second is measured
        row(rows[0])
        tracker = MemTracker()  # it takes one forward of the root module per tracking: the second row
        tracker.track_external(model, opt)
        with tracker if measured else contextlib.nullcontext():
            row(rows[1])
            opt.step()
            opt.zero_grad(set_to_none=True)
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def planned_peak(cfg, world, dtype, sharded):
    return sum(memory.memory_plan(M.Config.from_hf(SHAPE), cfg, world, dtype, sharded,
                                 M.Transformer.loss_chunk)["training step"].values())


@pytest.mark.parametrize("checkpointing", [True, False])
def test_plan_matches_measured_peak_in_one_process(checkpointing):
    cfg = settings(activation_checkpointing=checkpointing)
    measured = measured_peak(cfg, 1, 0, torch.float32, sharded=False)
    planned = planned_peak(cfg, 1, torch.float32, sharded=False)
    print(f"one process, checkpointing {checkpointing}: planned {planned / 2**20:.1f} MiB, "
          f"measured {measured / 2**20:.1f} MiB")
    assert abs(planned - measured) <= 0.2 * measured


def _fsdp_peak(rank, world, store, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(str(store), world), rank=rank, world_size=world)
    peak = measured_peak(settings(), world, rank, torch.bfloat16, sharded=True)
    if rank == 0:
        Path(out).write_text(str(peak))
    dist.barrier()  # both leave together: a group torn down while the other process still uses it can abort it
    dist.destroy_process_group()


def test_plan_matches_measured_peak_with_fsdp_over_two_processes(tmp_path):
    import torch.multiprocessing as mp
    mp.start_processes(_fsdp_peak, args=(2, tmp_path / "store", tmp_path / "peak"), nprocs=2, start_method="spawn")
    measured = int((tmp_path / "peak").read_text())
    planned = planned_peak(settings(), 2, torch.bfloat16, sharded=True)
    print(f"FSDP2 x 2, bf16: planned {planned / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    assert abs(planned - measured) <= 0.2 * measured


@pytest.mark.parametrize("recipe", [["config/r1_7b.py"], ["config/r1_14b.py"]])
def test_recipes_fit_eight_80gb_gpus_with_headroom_as_the_readme_shows(recipe, capsys):
    plan.main(recipe)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"plan {' '.join(recipe)}: peak ") and last.endswith("of 80 GiB, world 8")
    assert float(last.split("peak ")[1].split(" GiB")[0]) <= 0.9 * 80
    # the README shows the recipes' verdicts (this last line): they must be today's
    assert last in (ROOT / "README.md").read_text(), f"README: paste the last line of plan.py {recipe[0]}"


def test_plan_refuses_what_does_not_fit():
    with pytest.raises(SystemExit, match="lower row_tokens"):
        plan.main(["config/r1_7b.py", "--world=2"])
