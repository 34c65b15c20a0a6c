"""
TLDR fine-tuning: supervised fine-tuning on a System-1 (short CoT) / System-2 (long CoT) mixture whose
weights ratio.py re-balances from a dev evaluation every `eval_interval` steps.

    python train.py config/r1_7b.py --out_dir=out/r1_7b                      # one process
    torchrun --nproc_per_node=8 train.py config/r1_7b.py                     # FSDP2 over 8 GPUs
    torchrun --nproc_per_node=8 train.py config/r1_7b.py --resume            # continue the latest checkpoint
    python train.py config/r1_7b.py config/static.py --out_dir=out/static     # the paper's static 1:1 ablation

Configuration: the defaults are the TrainConfig fields below; config files (Python assignments of
literals, `lr = 1e-5`; `base = "r1_7b.py"` reads that file first), read in order, override them, and
`--key=value` flags override all. The resolved configuration is saved in every checkpoint.

Each optimizer step draws `global_batch` examples from the two sets in proportion to the mixture weights,
gives every process exactly global_batch / world of them, packs each share into rows of at most `row_tokens`
tokens (no attention across examples) and accumulates one row per micro-batch. The loss is a weighted sum of
the completion tokens' cross-entropy (prompts are masked); `loss_norm` sets the weights (token_scales):
    sequence  each example's mean token loss, averaged over the batch: every example weighs the same (the
              official 7B run: one sequence per GPU, Hugging Face's per-device token mean, averaged over GPUs)
    group     the token mean within groups of `loss_group` consecutive examples, averaged over the groups (the
              official 14B run: each GPU's token mean over its 4 accumulated sequences)
    token     the summed loss over the batch's completion tokens: every token weighs the same
The weights are fixed by the drawn batch alone, so the gradient is the same however it is split into rows and
processes.
"""

import ast
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from common import (FRACTION, PROBLEM_TYPES, RULES, TEXT, above, at_least, atomic_write, between,
                    check_settings, jsonl_text, read_jsonl, write_failed)
from model import (Config, KVCache, Transformer, Weights, attention_summary, checkpoints, commit_dir, model_path,
                   our_names, read_config, rope_inv_freq, saved_dtype, write_weights)
from ratio import Bounds, Mixture
from sample import barrier, example_ids, generate, load_tokenizer, prompt_ids, release_engine, run_lock, stop_ids


@dataclass
class TrainConfig:
    # models and data
    model: str = ""                # the model to fine-tune (the long model M_L): a Hugging Face directory, or a
                                   # training run's folder (its latest checkpoint) or chosen.json
    system1: str = ""              # JSON Lines of short-CoT examples: {"problem", "response"} or {"messages"}
    system2: str = ""              # JSON Lines of long-CoT examples, same format
    dev: str = ""                  # JSON Lines of dev problems {"problem", "answer"}
    bounds: str = ""               # bounds file (JSON, see ratio.Bounds), measured with the dev settings below
    out_dir: str = "out/tldr"
    # the mixture (ratio.py)
    mixture: str = "dynamic"       # dynamic (TLDR) | static (fixed weights, the ablation)
    w_short: float = 0.5           # initial (or static) weight of System-1
    eta: float = 4.0
    c: float = 1e-4
    # optimisation
    max_steps: int = 2000
    global_batch: int = 8          # examples per optimizer step, over all processes (a multiple of their number)
    loss_norm: str = "sequence"    # sequence | group | token: how tokens are weighted in the loss (see above)
    loss_group: int = 4            # loss_norm=group: examples per group
    row_tokens: int = 16384        # token budget of a packed row; one row is one micro-batch
    max_len: int = 16000           # longer examples are skipped and counted, never cut
    lr: float = 1e-5
    lr_schedule: str = "constant"  # constant | linear (to 0 at max_steps) | cosine (to min_lr)
    warmup_steps: int = 0          # lr rises linearly from 0 over these steps
    min_lr: float = 0.0            # the end of the cosine schedule
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0         # 0 = no clipping
    activation_checkpointing: bool = False
    # dev evaluation (the same sampling settings as the bounds)
    eval_interval: int = 32
    dev_max_new_tokens: int = 8192
    dev_temperature: float = 0.7
    dev_top_p: float = 1.0
    dev_batch_size: int = 64       # KV-cache slots per process
    # checkpoints
    save_interval: int = 32
    keep_checkpoints: int = 2      # the latest ones kept, besides the one the choice rule prefers
    resume: bool = False
    seed: int = 0
    wandb_project: str = ""        # log to Weights & Biases too (needs `pip install wandb`)
    # precision and processes
    dtype: str = "auto"            # compute dtype: auto = bfloat16 on CUDA (float32 elsewhere); master weights,
                                   # gradient reduction and AdamW state stay float32 (FSDP2 mixed precision)
    dist_timeout_minutes: int = 120  # how long a collective waits for the slowest process: one process's share
                                   # of a dev evaluation (8k-token answers) or rank 0 writing a checkpoint can take
                                   # tens of minutes, past torch's default of 10
    # the memory plan (python train.py config/r1_7b.py --plan): no GPU and no weights needed
    plan: bool = False             # print the per-GPU memory plan of this configuration and exit
    plan_world: int = 8            # --plan: the number of GPUs to plan for (a real run uses its own)
    plan_gpu_gib: float = 80.0     # --plan: the memory of one GPU (a real run reads its device's)


# what every numeric setting may be (checked with the config, before any work)
TRAIN_RULES = {
    "w_short": between(0, 1), "eta": at_least(0), "c": between(0, 1), "max_steps": at_least(1),
    "global_batch": at_least(1), "loss_group": at_least(1), "row_tokens": at_least(1), "max_len": at_least(1),
    "lr": above(0),
    "min_lr": at_least(0), "warmup_steps": at_least(0), "weight_decay": at_least(0), "beta1": between(0, 1, True),
    "beta2": between(0, 1, True), "grad_clip": at_least(0), "eval_interval": at_least(1),
    "dev_max_new_tokens": RULES["max_new_tokens"], "dev_temperature": RULES["temperature"], "dev_top_p": FRACTION,
    "dev_batch_size": at_least(1), "save_interval": at_least(1), "keep_checkpoints": at_least(1),
    "seed": RULES["seed"], "dist_timeout_minutes": at_least(1), "plan_world": at_least(1), "plan_gpu_gib": above(0),
}


def config_lines(path: Path, seen: tuple = ()) -> list[tuple[str, object, str]]:
    """(setting, value, file:line) of a config file of `name = literal` lines, in order. A line `base = "FILE"`
    (a file beside this one) stands for that file's lines: a recipe that differs from another in a few settings
    holds only those."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such config file")
    if path.resolve() in seen:
        raise SystemExit(f"{path}: read again through its own base (a loop of base = lines)")
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError as e:
        raise SystemExit(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None
    lines = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        single_name = isinstance(node, ast.Assign) and len(node.targets) == 1
        if not (single_name and isinstance(node.targets[0], ast.Name)):
            raise SystemExit(f"{path}:{node.lineno}: a config file holds only `name = value` lines")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise SystemExit(f"{path}:{node.lineno}: the value must be a literal (number, string, "
                             f"bool)") from None
        if node.targets[0].id == "base":
            if not isinstance(value, str):
                raise SystemExit(f"{path}:{node.lineno}: base names a config file beside this one, as a string")
            lines += config_lines(path.parent / value, seen + (path.resolve(),))
        else:
            lines.append((node.targets[0].id, value, f"{path}:{node.lineno}"))
    return lines


def load_config(argv) -> TrainConfig:
    """Defaults, then config files of `key = literal` lines in order, then --key=value flags."""
    cfg, fields = TrainConfig(), {f.name: f for f in dataclasses.fields(TrainConfig)}

    def set_value(key, value, where):
        if key not in fields:
            right = key.replace("-", "_")
            hint = f"settings are spelled with underscores: {right}" if right in fields else \
                "the settings are the TrainConfig fields in train.py"
            raise SystemExit(f"{where}: unknown setting {key!r}; {hint}")
        want = type(getattr(cfg, key))
        if want is bool and isinstance(value, str):
            value = {"true": True, "false": False, "1": True, "0": False}.get(value.lower(), value)
        elif isinstance(value, str) and want is not str:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise SystemExit(f"{where}: {key}={value!r} is not a {want.__name__}") from None
        if want is float and type(value) is int:
            value = float(value)
        if type(value) is not want:
            raise SystemExit(f"{where}: {key}={value!r} is not a {want.__name__}")
        setattr(cfg, key, value)

    for arg in argv:
        if arg.startswith("--"):
            key, has_value, value = arg[2:].partition("=")
            set_value(key, value if has_value else "true", f"flag {arg}")  # a bare --resume means --resume=true
        else:
            for key, value, where in config_lines(Path(arg)):
                set_value(key, value, where)
    return cfg


# -----------------------------------------------------------------------------
# data

def load_examples(path, tok, max_len, name):
    """Tokenized (ids, prompt_length) pairs, rendered exactly as sample.py renders prompts at test time."""
    def check(row):
        if "messages" in row:
            turns = row["messages"] if isinstance(row["messages"], list) else []
            if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in turns) or not {"user", "assistant"} <= {m["role"] for m in turns}:
                return "'messages' must be a list of {'role', 'content'} strings with a user and an assistant turn"
        elif not ("problem" in row and "response" in row):
            return "missing field(s): each line needs problem and response (or messages)"
        return None

    if not path:
        raise SystemExit(f"no {name} data: set {name}=PATH (JSON Lines)")
    try:
        rows = read_jsonl(path, required=(), types={"problem": TEXT, "response": TEXT}, check=check)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    examples, too_long = [], 0
    for row in rows:
        if "messages" in row:
            turns = {m["role"]: m["content"] for m in row["messages"]}
            problem, response = turns["user"], turns["assistant"]
        else:
            problem, response = row["problem"], row["response"]
        ids, n_prompt = example_ids(tok, problem, response)
        if len(ids) > max_len:
            too_long += 1
        else:
            examples.append((ids, n_prompt))
    if too_long:
        print(f"{path}: skipped {too_long} of {len(rows)} examples longer than max_len={max_len} tokens")
    if not examples:
        raise SystemExit(f"{path}: no usable {name} example ({len(rows)} lines, {too_long} too long)")
    return examples


def split_and_pack(examples, world, row_tokens):
    """Give each process exactly len(examples) / world of a step's examples (longest first, each to the least
    loaded process that still has room for one), then pack each share into rows first-fit decreasing.
    Deterministic, so every process computes the same plan."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i][0]), i))
    per_process = -(-len(examples) // world)  # exact when world divides the batch, as train.py requires
    shares, loads = [[] for _ in range(world)], [0] * world
    for i in order:
        r = min((r for r in range(world) if len(shares[r]) < per_process), key=lambda r: loads[r])
        shares[r].append(i)
        loads[r] += len(examples[i][0])
    plans = []
    for share in shares:
        rows, room = [], []
        for i in share:  # already longest first
            n = len(examples[i][0])
            j = next((j for j, left in enumerate(room) if left >= n), None)
            if j is None:
                rows.append([])
                room.append(row_tokens)
                j = len(rows) - 1
            rows[j].append(i)
            room[j] -= n
        plans.append(rows)
    return plans


def token_scales(examples, loss_norm: str, loss_group: int) -> list[float]:
    """The weight of each completion token of each example in the step's loss; they sum to 1 over the batch.
    The examples are cut into groups (one per example under `sequence`, one for the batch under `token`, else
    loss_group consecutive ones); each group weighs 1 / groups, shared equally by its completion tokens."""
    size = {"sequence": 1, "token": len(examples)}.get(loss_norm, loss_group)
    groups = [range(g, min(g + size, len(examples))) for g in range(0, len(examples), size)]
    scales = [0.0] * len(examples)
    for group in groups:
        tokens = max(sum(completion_tokens(examples[i]) for i in group), 1)
        for i in group:
            scales[i] = 1 / (len(groups) * tokens)
    return scales


def make_row(examples, device, scales=None):
    """One packed row: ids, positions restarting per example, targets (the next token where it is a completion
    token of the same example, else -100) and each target's weight in the loss (its example's scale; 1 if none)."""
    ids, pos, tgt, wts = [], [], [], []
    for k, (seq, n_prompt) in enumerate(examples):
        ids += seq
        pos += range(len(seq))
        tgt += [seq[j + 1] if j + 1 >= n_prompt else -100 for j in range(len(seq) - 1)] + [-100]
        wts += [1.0 if scales is None else scales[k]] * len(seq)
    as_tensor = lambda x, dtype=None: torch.tensor([x], dtype=dtype, device=device)
    return as_tensor(ids), as_tensor(pos), as_tensor(tgt), as_tensor(wts, torch.float32)


def forward_backward(model, examples, scales, plans, rank, grad_clip, device):
    """The gradients of one optimizer step (one packed row per micro-batch), clipped. Returns the loss, summed
    over processes, and the gradient norm before clipping."""
    # every process runs as many micro-batches as the busiest one (FSDP's collectives must match);
    # a process with fewer rows repeats its first one with weight 0
    loss_sum = 0.0
    my_rows = plans[rank] or [[0]]
    for r in range(max(len(p) for p in plans)):
        row = my_rows[min(r, len(my_rows) - 1)]
        ids, pos, tgt, wts = make_row([examples[i] for i in row], device, [scales[i] for i in row])
        loss = model(ids, pos, targets=tgt, scale=wts) * (1.0 if r < len(plans[rank]) else 0.0)
        loss.backward()
        loss_sum += loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    return all_sum(loss_sum, device), full(grad_norm).item()


def completion_tokens(example):
    ids, n_prompt = example
    return len(ids) - n_prompt


# -----------------------------------------------------------------------------
# processes: one plain process on CPU, or FSDP2 (torchrun, or any CUDA run)

def compute_dtype(cfg, device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


@dataclass
class Processes:
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype    # the compute dtype
    sharded: bool         # FSDP2 (else one plain process)


def setup_processes(cfg) -> Processes:
    """The model is sharded with FSDP2 whenever there are several processes, a GPU, or a compute dtype other
    than float32: a single GPU then computes in bf16 through the same mixed-precision path as eight do. A plain
    CPU process trains the unwrapped model in float32."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    dtype = compute_dtype(cfg, device)
    sharded = world > 1 or device.type == "cuda" or dtype != torch.float32
    if not sharded:
        return Processes(0, 1, device, dtype, False)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend, timeout = ("nccl" if device.type == "cuda" else "gloo"), timedelta(minutes=cfg.dist_timeout_minutes)
    if world > 1:
        dist.init_process_group(backend, timeout=timeout)
    else:  # one process without torchrun: a group of one, so that FSDP2 (mixed precision) works the same way
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return Processes(dist.get_rank(), world, device, dtype, True)


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


# -----------------------------------------------------------------------------
# the model: built, sharded and loaded so that no process ever holds more than its shard and one tensor

def shard(model, dtype):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in model.model.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    # sum the gradients over processes, in every sharded module: the loss is already divided by the global
    # token count (and gloo's AVG reduce-scatter has summed instead of averaged in some torch versions)
    for module in [*model.model.layers, model]:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)


def shard_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """The rows of a dimension of n that FSDP2 gives to `rank` (torch.chunk's split: ceil(n / world) each)."""
    size = -(-n // world)
    return min(rank * size, n), min((rank + 1) * size, n)


def build_model(cfg, source: Path, master: Path | None, proc: Processes):
    """The model to train with float32 master weights. source: a model directory; master: the master-weight
    file of this process in a checkpoint being resumed (exact), else the weights of `source` are read.
    Sharded, the model is built on the meta device and every process reads only the rows of its own shard."""
    rank, world, device = proc.rank, proc.world, proc.device
    try:
        config = Config.from_hf(read_config(source), str(source / "config.json"))
        weights = Weights(master.parent, files=[master.name]) if master else Weights(source)
        if not master:  # (a master file holds this process's shard of each tensor, not the config's shapes)
            weights.check(config, str(source))
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {e}") from None
    with torch.device("meta"):
        model = Transformer(config)
    if proc.sharded:
        shard(model, proc.dtype)
    model.to_empty(device=device)
    if config.tie_word_embeddings and not proc.sharded:  # to_empty made two tensors of the tied one
        model.lm_head.weight = model.model.embed_tokens.weight
    with torch.no_grad():
        for name, param in model.state_dict().items():
            if config.tie_word_embeddings and name == "lm_head.weight":
                continue  # the embedding itself
            mine = local(param)
            rows = shard_rows(param.shape[0], rank, world) if proc.sharded else None
            try:
                mine.copy_(weights.read(name, torch.float32, device) if master else
                           weights.read_ours(config, name, torch.float32, device, rows=rows).view(mine.shape))
            except (KeyError, RuntimeError) as e:
                raise SystemExit(f"error: {weights.path}: cannot load {name} for process {rank} of {world} "
                                 f"({type(e).__name__}: {e})") from None
        model.inv_freq.copy_(rope_inv_freq(config))  # a buffer: to_empty left it uninitialised
    return model.train()


@torch.no_grad()
def generation_copy(model, dtype, sharded):
    """The weights being trained as a plain model for sampling, in the compute dtype. Sharded, the copy is
    gathered one tensor at a time and cast as it goes: never a whole float32 state dict on a GPU."""
    if not sharded:
        return model
    state = {}
    for name, t in model.state_dict().items():
        if not (model.config.tie_word_embeddings and name == "lm_head.weight"):
            state[name] = full(t).to(dtype)  # collective: every process gathers every tensor
    return Transformer.from_state_dict(model.config, state)


# -----------------------------------------------------------------------------
# dev evaluation

@torch.no_grad()
def dev_evaluation(model, cfg, data, step, proc: Processes):
    """Every process answers its share of the dev set with a full copy of the current weights."""
    from grade import grade_responses  # imported on first use: only a run with a dev set grades
    tok, dev_rows = data.tok, data.dev_rows
    infer = generation_copy(model, proc.dtype, proc.sharded).eval()
    mine = list(range(proc.rank, len(dev_rows), proc.world))
    on_gpu = proc.device.type == "cuda"
    outs = generate(infer, [data.dev_prompts[i] for i in mine], max_new_tokens=cfg.dev_max_new_tokens,
                    temperature=cfg.dev_temperature, top_p=cfg.dev_top_p, stop_ids=stop_ids(tok),
                    seed=cfg.seed + step, batch_size=cfg.dev_batch_size,
                    kv_memory=dev_cache_bytes(model.config, cfg, proc.dtype) if on_gpu else None)
    release_engine()  # the KV cache and the copy of the weights, before training goes on
    del infer
    texts = [tok.decode(o[0].tokens, skip_special_tokens=True) for o in outs]
    verdicts = grade_responses(texts, [str(dev_rows[i]["answer"]) for i in mine],
                               truncated=[o[0].finish == "length" for o in outs])
    results = all_gather_lists([(len(o[0].tokens), v["correct"]) for o, v in zip(outs, verdicts)])
    model.train()
    return sum(t for t, _ in results) / len(results), sum(c for _, c in results) / len(results)


# -----------------------------------------------------------------------------
# checkpoints: step_NNNNNN/ = Hugging Face weights (in the base model's dtype, bf16 for R1-Distill) + tokenizer,
# and train_state/: state.json, the float32 master weights and the AdamW state of every process (safetensors,
# no pickle). train_state/ is a subdirectory so that vLLM, which loads every top-level *.safetensors, sees
# only the model.

def tokenizer_files(model_dir: Path) -> list[Path]:
    """Everything of the base model directory but its weights and config: tokenizer files, chat template,
    generation config. Copied into every checkpoint so that it is a complete model directory."""
    skip = {"config.json", "model.safetensors.index.json"}
    return [f for f in Path(model_dir).iterdir() if f.is_file() and f.name not in skip
            and f.suffix not in (".safetensors", ".bin", ".pt", ".pth")]


def shard_file(kind: str, rank: int, world: int) -> str:
    return f"{kind}-rank{rank:05d}-of-{world:05d}.safetensors"


def save_checkpoint(model, opt, cfg, state: dict, out_dir: Path, step: int, chosen_step, proc: Processes):
    """step_NNNNNN/, written into a temporary directory and renamed into place; a write that fails (a full disk,
    an I/O error) removes the temporary directory and stops with one line, the last complete checkpoint untouched."""
    from safetensors import SafetensorError
    final, tmp = out_dir / f"step_{step:06d}", out_dir / f".step_{step:06d}.tmp"
    try:
        write_checkpoint(model, opt, cfg, state, tmp, final, proc)
    except BaseException as e:
        if proc.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            last = checkpoints(out_dir)
            raise write_failed(tmp, e, f"run again with --resume: it continues from "
                                       f"{last[-1] if last else 'the start'}") from None
        raise
    if proc.rank == 0:
        # prune this run's checkpoints (never another's): keep the latest few, and the one the rule prefers so far
        mine = [c for c in checkpoints(out_dir)
                if (read_state(c) or {}).get("run_id", "before-run-ids") == state["run_id"]]
        for old in mine[:-cfg.keep_checkpoints]:
            if old.name != f"step_{chosen_step or 0:06d}":
                shutil.rmtree(old)
    barrier()
    return final


def write_checkpoint(model, opt, cfg, state: dict, tmp: Path, final: Path, proc: Processes):
    rank, world = proc.rank, proc.world
    if rank == 0:
        (tmp / "train_state").mkdir(parents=True)
    barrier()
    # the model, gathered one tensor at a time (collective) and written by rank 0 in the base model's dtype
    weights, dtype = model.state_dict(), saved_dtype(model.config)
    names = our_names(model.config)
    if rank == 0:
        write_weights(model.config, lambda k: full(weights[k]), tmp, dtype)
    else:
        for k in names:
            full(weights[k])
    # exact resume needs the float32 master weights when the model directory holds a rounded copy
    from safetensors.torch import save_file
    if dtype != torch.float32:
        save_file({k: local(weights[k]).detach().cpu().contiguous() for k in names},
                  str(tmp / "train_state" / shard_file("master", rank, world)))
    save_optimizer(opt, tmp / "train_state" / shard_file("optimizer", rank, world))
    barrier()
    if rank == 0:
        for f in tokenizer_files(cfg.model):
            shutil.copy2(f, tmp / f.name)
        atomic_write(tmp / "train_state" / "state.json", json.dumps({**state, "world_size": world}, indent=1))
        commit_dir(tmp, final)


def save_optimizer(opt, path: Path):
    """AdamW state as safetensors (each process its own shard; no pickle anywhere)."""
    from safetensors.torch import save_file
    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for key, t in st.items():
            tensors[f"{i}.{key}"] = local(t).detach().cpu().contiguous()
    save_file(tensors, str(path))


def load_optimizer(opt, path: Path):
    from safetensors.torch import load_file
    from torch.distributed.tensor import DTensor
    try:
        saved = load_file(str(path))
    except Exception as e:  # missing, truncated, not safetensors
        raise SystemExit(f"{path}: cannot read the optimizer state ({e}); the checkpoint is damaged: move "
                         f"{path.parents[1]} away to resume from the checkpoint before it") from None
    sd = opt.state_dict()
    params = [p for g in opt.param_groups for p in g["params"]]
    state = {}
    for key, t in saved.items():
        i, name = key.split(".", 1)
        p = params[int(i)]
        if isinstance(p, DTensor) and name != "step":
            t = DTensor.from_local(t.to(p.device), p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
        state.setdefault(int(i), {})[name] = t
    sd["state"] = state
    opt.load_state_dict(sd)


def read_state(ckpt: Path) -> dict | None:
    """A checkpoint's train_state/state.json, or None if it is missing or damaged."""
    try:
        state = json.loads((ckpt / "train_state" / "state.json").read_text())
    except (OSError, ValueError):
        return None
    keys = {"step": int, "config": dict, "mixture": dict, "metrics": list, "world_size": int}
    return state if isinstance(state, dict) and all(isinstance(state.get(k), t) for k, t in keys.items()) else None


def resume_point(cfg, out_dir: Path, proc: Processes, log):
    """(checkpoint, state, master file) of the latest complete checkpoint to resume, or (None, None, None) for a
    new run. An interrupted write is a dot-directory, never taken. A new run never starts in a folder that holds
    another run: its checkpoints, metrics and choice would be mixed with (and its pruning would delete) those."""
    if proc.rank == 0:  # checkpoints a killed or failed write left half-written (this run holds the folder's lock)
        for tmp in out_dir.glob(".step_*.tmp"):
            shutil.rmtree(tmp)
    saved = checkpoints(out_dir)
    if not cfg.resume:
        taken = [p.name for p in saved] + [f for f in ("metrics.jsonl",) if (out_dir / f).exists()]
        if taken:
            raise SystemExit(f"{out_dir} holds a run already ({', '.join(taken[-2:])}): pass --resume to continue it "
                             f"or another out_dir; to start over, delete {out_dir} first")
        return None, None, None
    if not saved:
        return None, None, None
    ckpt = saved[-1]
    state = read_state(ckpt)
    if state is None:
        raise SystemExit(f"{ckpt / 'train_state' / 'state.json'} is missing or damaged: the checkpoint cannot be "
                         f"resumed. Move {ckpt} away to resume from the checkpoint before it.")
    if state["world_size"] != proc.world:
        raise SystemExit(f"{ckpt}: saved by {state['world_size']} processes, resumed with {proc.world}: "
                         f"the optimizer shards only fit the same number")
    master = ckpt / "train_state" / shard_file("master", proc.rank, proc.world)
    try:
        weights_dtype = saved_dtype(Config.from_hf(read_config(ckpt), str(ckpt / "config.json")))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}; or move {ckpt} away to resume from the checkpoint before it") from None
    if not master.exists():
        # float32 model weights are the master weights (and checkpoints of nanoTLDR before bf16 checkpoints)
        if weights_dtype != torch.float32:
            raise SystemExit(f"{ckpt}: no float32 master weights ({master.name}) beside the rounded model weights; "
                             f"this checkpoint cannot be resumed exactly (start a new run from it with model={ckpt})")
        master = None
    changed = {k: (v, getattr(cfg, k)) for k, v in state["config"].items()
               if getattr(cfg, k, v) != v and k not in ("resume", "max_steps", "wandb_project")}
    if changed:
        log(f"warning: resuming with changed settings (saved, now): {changed}")
    log(f"resuming from {ckpt} (step {state['step']})")
    return ckpt, state, master


def choose(evals: list[dict], long_acc: float):
    """The official checkpoint choice: among evaluated checkpoints whose dev accuracy exceeds 0.7 x A_L,
    the one with the fewest dev tokens."""
    ok = [e for e in evals if e.get("saved") and e["dev_acc"] > 0.7 * long_acc]
    return min(ok, key=lambda e: (e["dev_tokens"], e["step"])) if ok else None


# -----------------------------------------------------------------------------
# the memory plan: what one process holds at the peak of each phase, from the shapes alone (no GPU, no weights).
# Each term names the tensors it counts; tests/test_plan.py checks the totals against the peaks that torch's
# MemTracker measures on CPU runs of small models (one process, and FSDP2 over two).

# config.json of the two recipe models (deepseek-ai/DeepSeek-R1-Distill-Qwen-7B and -14B on the Hub), for --plan
# without a download
RECIPE_MODELS = {
    "DeepSeek-R1-Distill-Qwen-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                        num_attention_heads=28, num_key_value_heads=4),
    "DeepSeek-R1-Distill-Qwen-14B": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                                         num_attention_heads=40, num_key_value_heads=8),
}
PROMPT_TOKENS = 1024  # room for a dev prompt in the KV cache (AIME prompts are a few hundred tokens)


def dev_cache_bytes(c: Config, cfg, dtype) -> int:
    """The KV cache of a dev evaluation: dev_batch_size sequences at full length (the engine never preempts
    then). On a GPU the engine gets exactly this, not all free memory, so that the plan holds."""
    return cfg.dev_batch_size * (PROMPT_TOKENS + cfg.dev_max_new_tokens) * KVCache.page_bytes(c, 1, dtype)


def plan_config(model_dir: str) -> Config:
    path = Path(model_dir)
    if (path / "config.json").is_file():
        return Config.from_hf(read_config(path), str(path / "config.json"))
    if path.name in RECIPE_MODELS:
        return Config.from_hf({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 152064, "rms_norm_eps": 1e-6,
                               "max_position_embeddings": 131072, **RECIPE_MODELS[path.name]})
    raise SystemExit(f"--plan: {model_dir} has no config.json and is not one of {', '.join(RECIPE_MODELS)}; "
                     f"set model= to a model directory (only its config.json is read)")


def memory_plan(c: Config, cfg, world: int, dtype: torch.dtype, sharded: bool, loss_chunk: int) -> dict:
    """{phase: {what: bytes}} per process for a training step, a dev evaluation and a checkpoint save."""
    H, I, L, V, T = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size, cfg.row_tokens
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    block = H * (q + 2 * kv) + q * H + 3 * H * I + 2 * H + (q + 2 * kv) * c.attention_bias
    root = V * H * (1 if c.tie_word_embeddings else 2) + H
    P, b = L * block + root, dtype.itemsize
    shard = lambda n: -(-n // world)
    state = {"master weights (fp32, sharded)": 4 * shard(P), "AdamW moments (fp32, sharded)": 8 * shard(P)}
    grads = {"gradients (fp32, sharded)": 4 * shard(P)}
    # FSDP2 all-gathers a block's weights in the compute dtype just before it runs, one block ahead; the root
    # module's (embeddings, lm_head) stay gathered from the start of forward to the end of backward
    gathered = {"gathered root weights (embeddings, lm_head)": root * b, "gathered blocks (this + next)": 2 * block * b,
                "unsharded gradients of a block (+ fp32 for reduce-scatter)": block * (b + 4)} if sharded else {}
    # what one block keeps for backward: its input and normed input twice (2 norms), q and k with their rotated
    # halves and rotated results, v, the attention output, and the MLP's gate, up, silu(gate) and product
    block_saved = T * (8 * H + 4 * kv + 4 * I) * b
    checkpointing = cfg.activation_checkpointing
    saved = {"activations: block inputs (checkpointed)" if checkpointing else
             "activations: every block's saved tensors": L * (T * H * b if checkpointing else block_saved),
             "activations: final norm and target rows": 3 * T * H * b + T * H * 4 * (b < 4)}
    loss = {"loss chunk: logits, log-probabilities, their gradient (fp32)": 12 * min(loss_chunk, T) * V}
    recompute = {"one block recomputed in backward, and its gradients": block_saved + T * (3 * H + 2 * I) * b}
    train_peak = {**state, **grads, **gathered, **saved,
                  **max(loss, recompute if cfg.activation_checkpointing else {"-": 0}, key=lambda d: sum(d.values()))}
    largest = max(V * H, H * I) * 4  # one tensor gathered whole in fp32 (the embedding)
    cache = dev_cache_bytes(c, cfg, dtype)
    dev = {**state, "generation copy of the weights (compute dtype)": P * b if sharded else 0,
           "one tensor gathered in fp32": largest if sharded else 0,
           f"KV cache ({cfg.dev_batch_size} slots x {PROMPT_TOKENS + cfg.dev_max_new_tokens} tokens)": cache}
    save = {**state, "one tensor gathered in fp32, and its copy to write": largest + largest // 4 * b}
    return {"training step": train_peak, "dev evaluation": dev, "checkpoint save": save}


def plan_report(cfg, config_name: str, world: int, gpu_bytes: float, dtype, sharded) -> tuple[str, float]:
    """The plan as text, ending with its one-line verdict, and the largest peak in bytes."""
    plan = memory_plan(plan_config(cfg.model), cfg, world, dtype, sharded, Transformer.loss_chunk)
    gib = 2**30
    lines = [f"memory plan: {Path(cfg.model).name}, {world} process(es), row_tokens {cfg.row_tokens}, "
             f"{str(dtype).removeprefix('torch.')} compute, activation checkpointing {cfg.activation_checkpointing}"]
    share = -(-cfg.global_batch // world)
    lines.append(f"  a step's work: {cfg.global_batch} examples of <= {cfg.max_len} tokens, {share} per process: <= "
                 f"{share * cfg.max_len} tokens per process, <= {cfg.global_batch * cfg.max_len} in all")
    for phase, parts in plan.items():
        lines.append(f"  {phase}: {sum(parts.values()) / gib:.1f} GiB")
        lines += [f"    {n / gib:8.2f} GiB  {what}" for what, n in parts.items() if n]
    peak = max(sum(parts.values()) for parts in plan.values())
    lines.append(f"plan {config_name}: peak {peak / gib:.1f} GiB per GPU of {gpu_bytes / gib:.0f} GiB, world {world}")
    return "\n".join(lines), peak


def check_plan(cfg, config_name, world, gpu_bytes, dtype, sharded, log):
    """Print the plan; stop when its peak leaves less than 10% of the GPU free (what a real run needs for the
    CUDA context, the allocator's fragmentation and what the plan does not count)."""
    text, peak = plan_report(cfg, config_name, world, gpu_bytes, dtype, sharded)
    log(text)
    if peak > 0.9 * gpu_bytes:
        raise SystemExit(f"the plan leaves less than 10% of {gpu_bytes / 2**30:.0f} GiB free: lower row_tokens or "
                         f"dev_batch_size, turn activation_checkpointing on, or use more GPUs")


# -----------------------------------------------------------------------------

def lr_at(cfg, step):
    """The lr of optimizer step `step` (1, 2, ...): Hugging Face's schedule at its step - 1, as the official runs
    used it (get_scheduler: with warm-up, the first update runs at lr 0)."""
    s = step - 1
    if s < cfg.warmup_steps:
        return cfg.lr * s / cfg.warmup_steps
    progress = (s - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
    if cfg.lr_schedule == "linear":
        return cfg.lr * (1 - progress)
    if cfg.lr_schedule == "cosine":
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
    return cfg.lr


def validate(cfg: TrainConfig):
    check_settings(dataclasses.asdict(cfg), TRAIN_RULES)
    problems = []
    if cfg.mixture not in ("dynamic", "static"):
        problems.append(f"mixture={cfg.mixture!r}: use dynamic or static")
    if cfg.lr_schedule not in ("constant", "linear", "cosine"):
        problems.append(f"lr_schedule={cfg.lr_schedule!r}: use constant, linear or cosine")
    if cfg.loss_norm not in ("sequence", "group", "token"):
        problems.append(f"loss_norm={cfg.loss_norm!r}: use sequence, group or token")
    if cfg.loss_norm == "group" and cfg.global_batch % cfg.loss_group:
        problems.append(f"loss_group={cfg.loss_group} does not divide global_batch={cfg.global_batch}")
    if cfg.dtype not in ("auto", "float32", "bfloat16"):
        problems.append(f"dtype={cfg.dtype!r}: use auto, float32 or bfloat16")
    if cfg.mixture == "dynamic" and not (cfg.dev and cfg.bounds) and not cfg.plan:
        problems.append("the dynamic mixture needs dev=PATH and bounds=PATH (or use mixture=static)")
    if cfg.max_len > cfg.row_tokens:
        problems.append(f"max_len={cfg.max_len} is more than row_tokens={cfg.row_tokens}: an example must fit a row")
    if not cfg.model:
        problems.append("model=DIR is required (the Hugging Face directory of the model to fine-tune)")
    if problems:
        raise SystemExit("bad configuration:\n  " + "\n  ".join(problems))


# -----------------------------------------------------------------------------
# the pieces of the main loop

@dataclass
class RunData:
    tok: object
    bounds: Bounds | None
    dev_rows: list
    dev_prompts: list
    examples: dict  # System (1 or 2) -> its (ids, prompt length) examples

    @property
    def sizes(self):
        return len(self.examples[1]), len(self.examples[2])


def load_data(cfg) -> RunData:
    """The tokenizer, the bounds, the dev set and both training sets, every file checked as it is read."""
    try:
        tok = load_tokenizer(cfg.model)
        bounds = Bounds.load(cfg.bounds) if cfg.bounds else None
        dev_rows = read_jsonl(cfg.dev, required=("problem", "answer"), types=PROBLEM_TYPES) if cfg.dev else []
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if cfg.dev and not dev_rows:
        raise SystemExit(f"{cfg.dev}: the dev set is empty")
    if bounds:
        sampling = json.loads(Path(cfg.bounds).read_text()).get("sampling")
        mine = {"temperature": cfg.dev_temperature, "top_p": cfg.dev_top_p, "max_new_tokens": cfg.dev_max_new_tokens}
        if sampling is not None and sampling != mine:
            # the official release compared bounds at 0.7/16000 with a dev evaluation at 1.0/8192: not again
            raise SystemExit(f"{cfg.bounds}: the bounds were measured with {sampling}, the dev evaluation would use "
                             f"{mine}; the benefits compare like with like only if they are equal")
    # plain SFT on one set is a static mixture with weight 0 on the other, whose file may then be left out
    weights = (cfg.w_short, 1 - cfg.w_short)
    examples = {k: [] if cfg.mixture == "static" and weights[k - 1] == 0 and not path else
                load_examples(path, tok, cfg.max_len, f"system{k}") for k, path in ((1, cfg.system1), (2, cfg.system2))}
    return RunData(tok, bounds, dev_rows, [prompt_ids(tok, r["problem"]) for r in dev_rows], examples)


class MetricsLog:
    """metrics.jsonl (a line per step and per dev evaluation, appended as they come) and, optionally, wandb."""

    def __init__(self, cfg, out_dir: Path, rows: list, master: bool):
        self.rows, self.path, self.master, self.wandb = rows, out_dir / "metrics.jsonl", master, None
        if master:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, jsonl_text(rows))  # a resumed run: what its checkpoint had seen
            if cfg.wandb_project:
                import wandb
                self.wandb = wandb
                wandb.init(project=cfg.wandb_project, name=out_dir.name, config=dataclasses.asdict(cfg))

    def record(self, row: dict):
        self.rows.append(row)
        if self.master:
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:  # the checkpoint holds the metrics up to its step: a resume rewrites the file
                raise write_failed(self.path, e, "run again with --resume") from None
            if self.wandb:
                self.wandb.log(row, step=row["step"])


def train_step(step, cfg, model, opt, mixture, data: RunData, proc: Processes, out_dir: Path) -> dict:
    """One optimizer step on global_batch examples drawn by the mixture; a non-finite loss stops before the update."""
    t0 = time.time()
    drawn = mixture.draw(step, cfg.global_batch, data.sizes, cfg.seed)
    examples = [data.examples[system][i] for system, i in drawn]
    plans = split_and_pack(examples, proc.world, cfg.row_tokens)
    scales = token_scales(examples, cfg.loss_norm, cfg.loss_group)
    loss, grad_norm = forward_backward(model, examples, scales, plans, proc.rank, cfg.grad_clip, proc.device)
    n_target = sum(completion_tokens(e) for e in examples)
    if not math.isfinite(loss) or not math.isfinite(grad_norm):
        last = checkpoints(out_dir)
        raise SystemExit(f"loss {loss} / grad norm {grad_norm} at step {step}: stopping before the update. "
                         f"The last good checkpoint is {last[-1] if last else 'none (none was saved yet)'}; "
                         f"lower lr or check the data, then run again with --resume.")
    lr = lr_at(cfg, step)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    opt.zero_grad(set_to_none=True)
    dt = time.time() - t0
    return {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": sum(len(e[0]) for e in examples),
            "completion_tokens": n_target, "system1": sum(s == 1 for s, _ in drawn), "w_short": mixture.weights[0],
            "w_long": mixture.weights[1], "time": dt, "tok_per_s": n_target / dt}


def dev_step(step, cfg, model, mixture, data: RunData, proc: Processes) -> dict:
    """A dev evaluation, and the mixture weights it gives the next eval_interval steps."""
    t0 = time.time()
    dev_tokens, dev_acc = dev_evaluation(model, cfg, data, step, proc)
    e = {"step": step, "dev_tokens": dev_tokens, "dev_acc": dev_acc, "eval_time": time.time() - t0}
    if data.bounds:
        e.update(mixture.update(data.bounds, dev_tokens, dev_acc))
    e["saved"] = step % cfg.save_interval == 0 or step == cfg.max_steps
    return e


def write_choice(metrics: list, bounds: Bounds, out_dir: Path):
    """chosen.json: the paper's checkpoint choice over this run's dev evaluations."""
    chosen = choose([x for x in metrics if "dev_acc" in x], bounds.long_acc)
    if not chosen:
        print(f"no checkpoint reached 0.7 x the long model's dev accuracy ({0.7 * bounds.long_acc:.3f})")
        return
    checkpoint = str(out_dir / f"step_{chosen['step']:06d}")
    atomic_write(out_dir / "chosen.json", json.dumps({**chosen, "checkpoint": checkpoint}, indent=2))
    print(f"chosen checkpoint: step {chosen['step']} (dev tokens {chosen['dev_tokens']:.1f}, "
          f"dev acc {chosen['dev_acc']:.3f} > 0.7 x {bounds.long_acc:.3f})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cfg = load_config(argv)
    validate(cfg)
    try:  # a model directory, a run's chosen.json, or a run's folder (its latest checkpoint)
        cfg.model = str(model_path(cfg.model))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    config_name = " ".join(a for a in argv if not a.startswith("--")) or "defaults"
    if cfg.plan:  # the plan for the GPUs the recipe targets: FSDP2 with bf16 compute unless dtype says otherwise
        dtype = compute_dtype(cfg, torch.device("cuda"))
        return check_plan(cfg, config_name, cfg.plan_world, cfg.plan_gpu_gib * 2**30, dtype, True, print)

    # -----------------------------------------------------------------------------
    # processes, data, mixture
    proc = setup_processes(cfg)
    log = print if proc.rank == 0 else (lambda *a, **k: None)
    if cfg.global_batch % proc.world:
        raise SystemExit(f"global_batch={cfg.global_batch} is not a multiple of the {proc.world} processes: each "
                         f"process trains on an equal share of every step's examples")
    if proc.device.type == "cuda":  # refuse a run that would run out of memory, before loading anything
        gpu_bytes = torch.cuda.get_device_properties(proc.device).total_memory
        check_plan(cfg, config_name, proc.world, gpu_bytes, proc.dtype, proc.sharded, log)
    # one run in an out_dir at a time: rank 0 holds its lock (released by the kernel if the process dies), and
    # every process stops when another run holds it
    with run_lock(Path(cfg.out_dir) / ".lock", f"the run folder {cfg.out_dir}"):
        train(cfg, proc, log)
    if proc.sharded:
        dist.destroy_process_group()


def train(cfg, proc: Processes, log):
    data = load_data(cfg)
    mixture = Mixture((cfg.w_short, 1 - cfg.w_short), cfg.eta, cfg.c, static=cfg.mixture == "static")

    # -----------------------------------------------------------------------------
    # model and optimizer: a new run, or the latest checkpoint of this one
    out_dir = Path(cfg.out_dir)
    ckpt, state, master_file = resume_point(cfg, out_dir, proc, log)
    # a run's id (kept by a resumed run) marks its checkpoints: pruning (rank 0's) only ever removes its own
    start, state = (state["step"], state) if state else (0, {"metrics": [], "run_id": uuid.uuid4().hex})
    state.setdefault("run_id", "before-run-ids")  # a checkpoint written before run ids
    if ckpt:
        mixture.load_state_dict(state["mixture"])
    model = build_model(cfg, Path(ckpt or cfg.model), master_file, proc)
    model.gradient_checkpointing = cfg.activation_checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if start:
        load_optimizer(opt, ckpt / "train_state" / shard_file("optimizer", proc.rank, proc.world))
    metrics = MetricsLog(cfg, out_dir, [m for m in state["metrics"] if m["step"] <= start], proc.rank == 0)
    log(attention_summary(proc.device, proc.dtype))
    log(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {proc.world} process(es); "
        f"System-1 {data.sizes[0]} examples, System-2 {data.sizes[1]}; dev {len(data.dev_rows)} problems")

    # -----------------------------------------------------------------------------
    # the loop: a step; every eval_interval steps a dev evaluation, which sets the mixture weights of the next
    # interval; every save_interval steps a checkpoint
    for step in range(start + 1, cfg.max_steps + 1):
        m = train_step(step, cfg, model, opt, mixture, data, proc, out_dir)
        metrics.record(m)
        log(f"step {step}/{cfg.max_steps} | loss {m['loss']:.4f} | lr {m['lr']:.2e} | {m['tok_per_s']:.0f} tok/s | "
            f"w {m['w_short']:.3f}/{m['w_long']:.3f} | {m['time']:.2f}s", flush=True)
        if cfg.dev and step % cfg.eval_interval == 0:
            e = dev_step(step, cfg, model, mixture, data, proc)
            metrics.record(e)
            log(f"eval step {step} | dev tokens {e['dev_tokens']:.1f} | dev acc {e['dev_acc']:.3f} | "
                f"w {mixture.weights[0]:.3f}/{mixture.weights[1]:.3f} | {e['eval_time']:.1f}s", flush=True)
        if step % cfg.save_interval == 0 or step == cfg.max_steps:
            chosen = choose([x for x in metrics.rows if "dev_acc" in x], data.bounds.long_acc) if data.bounds else None
            state = {"step": step, "config": dataclasses.asdict(cfg), "mixture": mixture.state_dict(),
                     "metrics": metrics.rows, "run_id": state["run_id"]}
            log(f"saved {save_checkpoint(model, opt, cfg, state, out_dir, step, chosen and chosen['step'], proc)}")

    # -----------------------------------------------------------------------------
    # the paper's checkpoint choice
    if data.bounds and proc.rank == 0:
        write_choice(metrics.rows, data.bounds, out_dir)


if __name__ == "__main__":
    main()
