"""
Memory, planned from the shapes alone (no GPU, no weights): what one process of a training run holds at the peak
of a training step, a dev evaluation and a checkpoint save (memory_plan; `python plan.py` prints it), and the KV
cache a generation engine gets (kv_pages, for sample.py): on a GPU what is free after its largest prefill,
nano-vllm's way; on CPU its rows at full length. Each term of the plan names the tensors it counts;
tests/test_plan.py checks the totals against the peaks torch's MemTracker measures on CPU runs of small models
(one process, and FSDP2 over two). On CUDA, train.py prints the plan and refuses to start a run whose peak leaves
less than 10% of the GPU free (check_plan).
"""

import sys
from pathlib import Path

import torch

from model import Config, KVCache, Transformer

# config.json of the two recipe models (deepseek-ai/DeepSeek-R1-Distill-Qwen-7B and -14B on the Hub): a plan
# without a download
RECIPE_MODELS = {
    "DeepSeek-R1-Distill-Qwen-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                        num_attention_heads=28, num_key_value_heads=4),
    "DeepSeek-R1-Distill-Qwen-14B": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                                         num_attention_heads=40, num_key_value_heads=8),
}


# -----------------------------------------------------------------------------
# the KV cache of a generation engine (sample.py)

GPU_UTILIZATION = 0.9  # the share of the GPU the process may fill (vLLM's gpu_memory_utilization default)


def gpu_kv_bytes(model, prefill_tokens: int) -> int:
    """The KV cache the GPU has room for, nano-vllm's way: with the allocator's cache emptied, run the largest
    prefill the engine can do, then total x utilization - used - that prefill's activations. torch's caching
    allocator keeps freed blocks, and mem_get_info counts them as used: without empty_cache an engine built after
    another (a second model) would find only the margin free."""
    device = model.lm_head.weight.device
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model(torch.zeros(1, prefill_tokens, dtype=torch.int64, device=device))
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    activations = torch.cuda.max_memory_allocated(device) - torch.cuda.memory_allocated(device)
    return int(total * GPU_UTILIZATION - (total - free) - activations)


def kv_pages(model, page_size, kv_memory, longest, rows, prefill_tokens, progress) -> int:
    """Pages of the KV cache: from kv_memory bytes when given; else on CUDA what the GPU has room for
    (gpu_kv_bytes); else (CPU) `rows` sequences of the longest length at once, which never preempts."""
    cfg, dtype = model.config, model.lm_head.weight.dtype
    page = KVCache.page_bytes(cfg, page_size, dtype)
    if kv_memory is None and model.lm_head.weight.is_cuda:
        kv_memory, source = gpu_kv_bytes(model, prefill_tokens), f"{GPU_UTILIZATION:.0%} of the GPU"
    elif kv_memory is None:  # the slot engine's reservation: never preempts
        kv_memory, source = (rows * -(-longest // page_size) + 1) * page, f"{rows} sequences at full length"
    else:
        source = "kv_memory"
    n_pages = int(kv_memory // page)
    need = -(-longest // page_size) + 1
    if n_pages < need:
        raise ValueError(f"a KV cache of {kv_memory / 2**30:.2f} GiB holds {n_pages} pages of {page_size} tokens; the "
                         f"longest sequence needs {need}: give more memory (kv_memory) or fewer new tokens")
    if progress:
        print(f"sample: kv cache: {n_pages} pages of {page_size} tokens, {n_pages * page / 2**30:.2f} GiB "
              f"({source})", file=sys.stderr, flush=True)
    return n_pages


PROMPT_TOKENS = 1024  # room for a dev prompt in the KV cache (AIME prompts are a few hundred tokens)


def dev_cache_bytes(c: Config, cfg, dtype) -> int:
    """The KV cache of a dev evaluation: dev_batch_size sequences at full length (the engine never preempts
    then). On a GPU the engine gets exactly this, not all free memory, so that the plan holds."""
    return cfg.dev_batch_size * (PROMPT_TOKENS + cfg.dev_max_new_tokens) * KVCache.page_bytes(c, 1, dtype)


def plan_config(model_dir: str) -> Config:
    path = Path(model_dir)
    if (path / "config.json").is_file():
        return Config.read(path)
    if path.name in RECIPE_MODELS:
        return Config.from_hf({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 152064, "rms_norm_eps": 1e-6,
                               "max_position_embeddings": 131072, **RECIPE_MODELS[path.name]})
    raise SystemExit(f"plan: {model_dir} has no config.json and is not one of {', '.join(RECIPE_MODELS)}; "
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
    if b < 4:  # flash-attn's deterministic backward: an fp32 dq accumulator per split, ceil(SMs / heads) of them for
        # a row of one document (mha_varlen_bwd in csrc/flash_attn/flash_api.cpp), the H100's 132 SMs
        recompute["flash-attn's deterministic dq accumulators (fp32)"] = -(-132 // c.num_attention_heads) * T * q * 4
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
