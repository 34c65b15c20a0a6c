"""
TLDR fine-tuning: supervised fine-tuning on a System-1 (short CoT) / System-2 (long CoT) mixture whose
weights ratio.py re-balances from a dev evaluation every `eval_interval` steps.

    python train.py config/r1_7b.py --out_dir=out/r1_7b                      # one process
    torchrun --nproc_per_node=8 train.py config/r1_7b.py                     # FSDP2 over 8 GPUs
    torchrun --nproc_per_node=8 train.py config/r1_7b.py --resume            # continue the latest checkpoint
    python train.py config/r1_7b.py config/static.py --out_dir=out/static     # the paper's static 1:1 ablation
    python plan.py config/r1_7b.py                                           # its memory plan per GPU (no GPU needed)

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

import dataclasses
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from checkpoint import (MetricsLog, Weights, diverged, load_optimizer, load_tokenizer, model_digest, model_path,
                        resume_point, save_checkpoint, shard_file, surely_longer)
from common import (FRACTION, PROBLEM_TYPES, RULES, TEXT, above, at_least, atomic_write, between, example_error,
                    file_digest, one_of, read_jsonl, read_settings, run, setting)
from model import Config, Transformer, attention_summary, rope_inv_freq, weight_shapes
from memory import check_plan, dev_cache_bytes
from processes import (Processes, all_gather_lists, all_sum, full, local, run_lock, shard, shard_rows,
                       training_processes)
from ratio import Bounds, Mixture
from prompts import example_ids, prompt_ids, stop_ids
from sample import generate, release_engine


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
    mixture: str = setting("dynamic", one_of("dynamic", "static"))  # static: fixed weights, the ablation
    w_short: float = setting(0.5, between(0, 1))  # initial (or static) weight of System-1
    eta: float = setting(4.0, at_least(0))
    c: float = setting(1e-4, between(0, 1))
    # optimisation
    max_steps: int = setting(2000, at_least(1))
    global_batch: int = setting(8, at_least(1))  # examples per optimizer step, over all processes (a multiple of
                                                 # their number)
    loss_norm: str = setting("sequence", one_of("sequence", "group", "token"))  # how tokens weigh (see above)
    loss_group: int = setting(4, at_least(1))       # loss_norm=group: examples per group
    row_tokens: int = setting(16384, at_least(1))   # token budget of a packed row; one row is one micro-batch
    max_len: int = setting(16000, at_least(1))      # longer examples are skipped and counted, never cut
    lr: float = setting(1e-5, above(0))
    # linear: to 0 at max_steps; cosine: to min_lr
    lr_schedule: str = setting("constant", one_of("constant", "linear", "cosine"))
    warmup_steps: int = setting(0, at_least(0))     # lr rises linearly from 0 over these steps
    min_lr: float = setting(0.0, at_least(0))       # the end of the cosine schedule
    weight_decay: float = setting(0.0, at_least(0))
    beta1: float = setting(0.9, between(0, 1, True))
    beta2: float = setting(0.999, between(0, 1, True))
    grad_clip: float = setting(1.0, at_least(0))    # 0 = no clipping
    eps: float = setting(1e-8, above(0))            # AdamW's epsilon
    activation_checkpointing: bool = False
    # dev evaluation (the same sampling settings as the bounds)
    eval_interval: int = setting(32, at_least(1))
    dev_max_new_tokens: int = setting(8192, RULES["max_new_tokens"])
    dev_temperature: float = setting(0.7, RULES["temperature"])
    dev_top_p: float = setting(1.0, FRACTION)
    dev_batch_size: int = setting(64, at_least(1))  # KV-cache slots per process
    # checkpoints
    save_interval: int = setting(32, at_least(1))
    keep_checkpoints: int = setting(2, at_least(1))  # the latest kept, besides the choice rule's and the one before
                                                     # the latest (where a diverged run continues)
    resume: bool = False
    seed: int = setting(0, RULES["seed"])
    wandb_project: str = ""        # log to Weights & Biases too (needs `pip install wandb`)
    # precision and processes
    dtype: str = setting("auto", one_of("auto", "float32", "bfloat16"))  # compute dtype: auto = bfloat16 on
                                   # CUDA (float32 elsewhere); master weights, gradient reduction and AdamW state
                                   # stay float32 (FSDP2 mixed precision)
    dist_timeout_minutes: int = setting(120, at_least(1))  # how long a collective waits for the slowest process:
                                   # one process's share of a dev evaluation (8k-token answers) or rank 0 writing a
                                   # checkpoint can take tens of minutes, past torch's default of 10


# -----------------------------------------------------------------------------
# data

def load_examples(path, tok, max_len, name):
    """Tokenized (ids, prompt_length) pairs, rendered exactly as sample.py renders prompts at test time."""
    if not path:
        raise SystemExit(f"no {name} data: set {name}=PATH (JSON Lines)")
    try:
        rows = read_jsonl(path, required=(), types={"problem": TEXT, "response": TEXT}, check=example_error)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    examples, too_long = [], 0
    for row in rows:
        if "messages" in row:
            turns = {m["role"]: m["content"] for m in row["messages"]}
            problem, response = turns["user"], turns["assistant"]
        else:
            problem, response = row["problem"], row["response"]
        ids, n_prompt = ([], 0) if surely_longer(tok, problem + response, max_len) else \
            example_ids(tok, problem, response)  # (a hostile size is skipped from its bytes, untokenized)
        if not ids or len(ids) > max_len:
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
# the model: built, sharded and loaded so that no process ever holds more than its shard and one tensor

def build_model(cfg, source: Path, master: Path | None, proc: Processes):
    """The model to train with float32 master weights. source: a model directory; master: the master-weight
    file of this process in a checkpoint being resumed (exact), else the weights of `source` are read.
    Sharded, the model is built on the meta device and every process reads only the rows of its own shard."""
    rank, world, device = proc.rank, proc.world, proc.device
    try:
        config = Config.read(source)
        weights = Weights(master.parent, files=[master.name]) if master else Weights(source)
        if not master:  # (a master file holds this process's shard of each tensor, not the config's shapes)
            weights.check(weight_shapes(config), config.tie_word_embeddings, str(source))
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
        for name, param in model.tensors().items():
            mine = local(param)
            rows = shard_rows(param.shape[0], rank, world) if proc.sharded else None
            try:
                mine.copy_(weights.read(name, torch.float32, device) if master else
                           weights.read_ours(config, name, torch.float32, device, rows=rows).view(mine.shape))
            except ValueError as e:  # not finite, or a damaged file: said with its file and tensor
                raise SystemExit(f"error: {e}") from None
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
    # collective: every process gathers every tensor
    return Transformer.from_state_dict(model.config, {name: full(t).to(dtype) for name, t in model.tensors().items()})


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
# the paper's checkpoint choice (the checkpoints themselves: checkpoint.py)

def choose(evals: list[dict], long_acc: float):
    """The official checkpoint choice: among evaluated checkpoints whose dev accuracy exceeds 0.7 x A_L,
    the one with the fewest dev tokens."""
    ok = [e for e in evals if e.get("saved") and e["dev_acc"] > 0.7 * long_acc]
    return min(ok, key=lambda e: (e["dev_tokens"], e["step"])) if ok else None


# -----------------------------------------------------------------------------
# the lr schedule, and the checks of a configuration that no single setting's rule can make

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
    """What a setting's rule cannot say alone (the ranges were checked as the settings were read)."""
    problems = []
    if cfg.loss_norm == "group" and cfg.global_batch % cfg.loss_group:
        problems.append(f"loss_group={cfg.loss_group} does not divide global_batch={cfg.global_batch}")
    if cfg.mixture == "dynamic" and not (cfg.dev and cfg.bounds):
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
    files: dict     # what it began with, {name: {"path", "digest"}}: recorded in the state, compared on resume

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
    files = {name: {"path": str(Path(path).resolve()), "digest": file_digest(path)} for name, path in
             (("system1", cfg.system1), ("system2", cfg.system2), ("dev", cfg.dev), ("bounds", cfg.bounds)) if path}
    files["model"] = {"path": cfg.model, "digest": model_digest(Path(cfg.model))}
    return RunData(tok, bounds, dev_rows, [prompt_ids(tok, r["problem"]) for r in dev_rows], examples, files)


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
        raise diverged(f"loss {loss} / grad norm {grad_norm} at step {step}", out_dir, step - 1)
    lr = lr_at(cfg, step)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    opt.zero_grad(set_to_none=True)
    dt = time.time() - t0
    return {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": sum(len(e[0]) for e in examples),
            "completion_tokens": n_target, "system1": sum(s == 1 for s, _ in drawn), "w_short": mixture.weights[0],
            "w_long": mixture.weights[1], "time": dt, "tok_per_s": n_target / dt}


def dev_step(step, cfg, model, mixture, data: RunData, proc: Processes, out_dir: Path) -> dict:
    """A dev evaluation, and the mixture weights it gives the next eval_interval steps."""
    t0 = time.time()
    try:
        dev_tokens, dev_acc = dev_evaluation(model, cfg, data, step, proc)
    except ValueError as e:  # logits that are not finite: the update of this step diverged
        raise diverged(f"dev evaluation at step {step}: {e}", out_dir, step) from None
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
    cfg = read_settings(TrainConfig, argv)
    validate(cfg)
    try:  # a model directory, a run's chosen.json, or a run's folder (its latest checkpoint)
        cfg.model = str(model_path(cfg.model))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    config_name = " ".join(a for a in argv if not a.startswith("--")) or "defaults"

    # -----------------------------------------------------------------------------
    # processes, data, mixture
    proc = training_processes(cfg.dtype, cfg.dist_timeout_minutes)
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
    ckpt, state, master_file = resume_point(cfg, out_dir, proc, log, data.files)
    # a run's id (kept by a resumed run) marks its checkpoints: pruning (rank 0's) only ever removes its own
    start, state = (state["step"], state) if state else (0, {"metrics": [], "run_id": uuid.uuid4().hex})
    if ckpt:
        mixture.load_state_dict(state["mixture"])
    model = build_model(cfg, Path(ckpt or cfg.model), master_file, proc)
    model.gradient_checkpointing = cfg.activation_checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
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
            e = dev_step(step, cfg, model, mixture, data, proc, out_dir)
            metrics.record(e)
            log(f"eval step {step} | dev tokens {e['dev_tokens']:.1f} | dev acc {e['dev_acc']:.3f} | "
                f"w {mixture.weights[0]:.3f}/{mixture.weights[1]:.3f} | {e['eval_time']:.1f}s", flush=True)
        if step % cfg.save_interval == 0 or step == cfg.max_steps:
            chosen = choose([x for x in metrics.rows if "dev_acc" in x], data.bounds.long_acc) if data.bounds else None
            state = {"step": step, "config": dataclasses.asdict(cfg), "mixture": mixture.state_dict(),
                     "metrics": metrics.rows, "run_id": state["run_id"], "data": data.files}
            log(f"saved {save_checkpoint(model, opt, cfg, state, out_dir, step, chosen and chosen['step'], proc)}")

    # -----------------------------------------------------------------------------
    # the paper's checkpoint choice
    if data.bounds and proc.rank == 0:
        write_choice(metrics.rows, data.bounds, out_dir)


if __name__ == "__main__":
    run(main, "the checkpoints written so far are kept in out_dir (one being written is dropped); the same command "
              "with --resume continues from the latest")
