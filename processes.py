"""
The processes of a run, set up in one place: alone, or one of a torch.distributed group under torchrun, and the
few collectives the scripts need. Training shards the model with FSDP2 over NCCL (gloo on CPU); the sampling
stages use a gloo group only to wait for one another.
"""

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from common import exclusive


@dataclass
class Processes:
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype    # the compute dtype
    sharded: bool         # FSDP2 (else one plain process)


def start_processes(backend="gloo", timeout=timedelta(days=7), group_of_one=False) -> tuple[int, int, torch.device]:
    """(rank, world, device) of this process, with the GPU of its local rank set. Under torchrun the process group
    starts on `backend`; the sampling stages' processes can finish hours apart, hence a week by default, where
    NCCL's watchdog would abort. group_of_one: a group even alone, so that FSDP2 runs the same way on one GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized() and world > 1:
        dist.init_process_group(backend, timeout=timeout)
    elif not dist.is_initialized() and group_of_one:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return rank_and_world()[0], world, device


def training_processes(dtype: str, timeout_minutes: int) -> Processes:
    """The model is sharded with FSDP2 whenever there are several processes, a GPU, or a compute dtype other
    than float32: a single GPU then computes in bf16 through the same mixed-precision path as eight do. A plain
    CPU process trains the unwrapped model in float32."""
    world, cuda = int(os.environ.get("WORLD_SIZE", "1")), torch.cuda.is_available()
    compute = compute_dtype(dtype, "cuda" if cuda else "cpu")
    if not (world > 1 or cuda or compute != torch.float32):
        return Processes(0, 1, torch.device("cpu"), compute, False)
    rank, world, device = start_processes("nccl" if cuda else "gloo", timedelta(minutes=timeout_minutes),
                                          group_of_one=True)
    return Processes(rank, world, device, compute, True)


def compute_dtype(name: str, device) -> torch.dtype:
    """auto: bfloat16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_sum(x: float, device) -> float:
    if not dist.is_initialized():
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def all_gather_lists(items: list) -> list:
    if not dist.is_initialized():
        return items
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly) sharded parameter; collective under FSDP: every process calls it."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a (possibly) sharded parameter."""
    return t.to_local() if hasattr(t, "to_local") else t


def shard(model, dtype):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in model.model.layers:
        fully_shard(block, mp_policy=mp)
    # the root's forward takes the loss weights (scale=): FSDP2 would cast them to bf16 with every floating input
    # (cast_forward_inputs, _fsdp_state.py's pre-forward hook), off by up to 0.2% each; the blocks still cast theirs
    fully_shard(model, mp_policy=MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32,
                                                      cast_forward_inputs=False))
    # sum the gradients over processes, in every sharded module: the loss is already divided by the global
    # token count (and gloo's AVG reduce-scatter has summed instead of averaged in some torch versions)
    for module in [*model.model.layers, model]:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)


def shard_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """The rows of a dimension of n that FSDP2 gives to `rank` (torch.chunk's split: ceil(n / world) each)."""
    size = -(-n // world)
    return min(rank * size, n), min((rank + 1) * size, n)


@contextlib.contextmanager
def run_lock(path, what: str):
    """Rank 0 holds the lock file `path` (common.exclusive) while the block runs; when another run holds it, every
    process stops with its pid and host (rank 0 alone would leave the others waiting in a collective)."""
    rank, world = rank_and_world()
    with contextlib.ExitStack() as held:
        refusal = None
        if rank == 0:
            try:
                held.enter_context(exclusive(path, what))
            except SystemExit as e:
                refusal = str(e)
        if world > 1:
            box = [refusal]
            dist.broadcast_object_list(box, src=0)
            refusal = box[0]
        if refusal:
            raise SystemExit(refusal)
        yield
