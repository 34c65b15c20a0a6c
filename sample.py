"""
Batched generation: a paged KV cache with continuous batching. Every sequence gets pages of the cache as it
grows and gives them back when it finishes (a stop token or its token limit), and a waiting prompt starts as
soon as its pages fit, so long and short answers share the batch and the cache holds what is used, not the
longest possible answer per row. When pages run out, the youngest sequence is preempted and recomputed later.

    python sample.py --model DIR --prompt "What is 7 * 8?"
    python sample.py --model DIR --prompts ../shared/data/aime24.jsonl --out out/aime24.jsonl \
        --samples 8 --temperature 0.6 --top_p 0.95 --max_new_tokens 32768
    torchrun --nproc_per_node=8 sample.py --model DIR --prompts ... --out ...   # every GPU its share

The prompts file has one problem per line ({"id": ..., "problem": ...}); each finished completion is
appended to a part file at once, and a rerun skips the (id, sample) pairs already done, so an interrupted run
loses nothing; the output is written in the prompts' order. From Python (what train.py and evaluate.py call):

    outs = generate(model, [prompts.prompt_ids(tok, "What is 7 * 8?")], max_new_tokens=512, stop_ids=[tok.eos_token_id])
    outs[0][0].tokens, outs[0][0].finish      # the completion of prompt 0, sample 0; "stop" or "length"

A decode step builds its integer tensors (positions, block tables, cache slots) once, in their final dtypes,
for every layer, and reads the device back once: the sampled tokens. On CUDA with flash-attn it is replayed
as a CUDA graph per bucket of batch sizes. The random number behind each token is a function of (seed, prompt
tokens, sample number, step), drawn for all rows in one call, whatever else shares the batch. On a CPU the logits
are too, so a completion is the same in any batch and a preempted or resumed sequence continues with the tokens it
would have made (tested). On a GPU the kernels' sums follow the batch's shape (flash-attn's split-KV count,
cuBLAS's choice of kernel): the same settings and process count repeat every completion, but another batch (more
processes, a resumed run) can tip a near-tie the other way.
"""

import gc
import hashlib
import heapq
import itertools
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from model import CacheIndex, KVCache, Transformer
from memory import kv_pages

# -----------------------------------------------------------------------------
# sampling: batch-independent randomness, and the next token of every row in one call

# splitmix64's constants, as signed 64-bit integers (torch's int64 arithmetic wraps like C's unsigned)
_GOLDEN, _MIX1, _MIX2 = (c - 2**64 for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def sequence_key(seed: int, prompt: list[int], sample: int) -> int:
    """The random key of one completion: a hash of (seed, prompt tokens, sample number), so that a completion
    draws the same numbers whatever else shares its batch, and a resumed run draws those it would have drawn."""
    h = hashlib.blake2b(repr((seed, prompt, sample)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1  # 63 bits: a non-negative int64


def uniforms(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uniform number in (0, 1) per row, a pure function of (key, step): splitmix64 on int64 tensors, every
    row at once. `(x >> k) & mask` is the unsigned shift on int64."""
    x = keys ^ (steps * _GOLDEN)
    x = (x ^ ((x >> 30) & (2**34 - 1))) * _MIX1
    x = (x ^ ((x >> 27) & (2**37 - 1))) * _MIX2
    x = x ^ ((x >> 31) & (2**33 - 1))
    return (((x >> 11) & (2**53 - 1)).double() + 0.5) / 2**53


def sample_tokens(logits, temperature, top_p, top_k, u) -> torch.Tensor:
    """Next token per row: argmax when temperature is 0, else inverse-CDF sampling with the given uniforms
    after temperature, top-k and top-p (the order transformers applies them in). Only top-p needs the whole
    vocabulary sorted; top-k takes its k best; plain sampling walks the vocabulary in its own order."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(-1, descending=True)
        if top_k:
            probs[:, top_k:] = 0
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens: keep a token while that is < top_p
        probs.masked_fill_(before >= top_p, 0)  # (probs[mask] = 0 would reach ATen's index_put_, which turns it
                                                # into this only for a CPU scalar: canDispatchToMaskedFill)
    elif top_k:
        probs, order = probs.topk(min(top_k, probs.shape[-1]), -1)
    cdf = probs.double().cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp_(max=probs.shape[1] - 1)
    return (pick if order is None else order.gather(1, pick)).squeeze(1)


# -----------------------------------------------------------------------------
# the engine: a paged KV cache, continuous batching, preemption when pages run out

@dataclass
class Completion:
    tokens: list[int]   # generated ids, ending with the stop id when finish == "stop"
    finish: str         # "stop" or "length"


@dataclass
class Sequence:
    number: int                    # position in the outputs: prompt * n + sample
    prompt: list[int]
    limit: int                     # new tokens at most
    key: int                       # its random key (sequence_key)
    tokens: list = field(default_factory=list)   # generated so far
    pages: list = field(default_factory=list)    # its block table: the pages holding its keys, in order
    cached: int = 0                # tokens whose keys are in the cache


def decode_buckets(max_rows: int) -> list[int]:
    """Batch sizes a decode step is padded to (one CUDA graph each): 1, 2, 4, 8, then every 16."""
    return sorted({b for b in (1, 2, 4, 8) if b < max_rows} | set(range(16, max_rows, 16)) | {max_rows})


def capture(fn, pool):
    """fn's kernels recorded once as a CUDA graph that shares the memory pool `pool`: (replay, pool)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool):
        fn()
    return graph.replay, graph.pool()


class DecodeGraphs:
    """The decode step captured as one CUDA graph per bucket of batch sizes, replayed with the step's integer
    tensors copied into static ones (nano-vllm's pattern). Padded rows write into the scratch page 0.
    With flash-attn only: its kernels do the whole step on the device, where SDPA's decode reads lengths."""

    def __init__(self, model, cache: KVCache, max_rows: int, max_pages: int):
        device = cache.k[0].device
        self.buckets, self.replays = decode_buckets(max_rows), {}
        self.ids = torch.zeros(max_rows, 1, dtype=torch.int64, device=device)
        self.positions = torch.zeros(max_rows, 1, dtype=torch.int64, device=device)
        self.seqlens = torch.zeros(max_rows, dtype=torch.int32, device=device)
        self.block_table = torch.zeros(max_rows, max_pages, dtype=torch.int32, device=device)
        self.slots = torch.zeros(max_rows, dtype=torch.int64, device=device)
        self.hidden = torch.zeros(max_rows, 1, model.config.hidden_size, dtype=cache.k[0].dtype, device=device)
        pool = None
        for b in reversed(self.buckets):  # the largest first: the others reuse its memory pool
            # (an SDPA decode, if forced, reads the table's whole width: the captured step has no longest row)
            index = CacheIndex(self.slots[:b], block_table=self.block_table[:b], seqlens=self.seqlens[:b],
                               max_len=max_pages * cache.page_size)
            step = lambda b=b, index=index: self.hidden[:b].copy_(model(self.ids[:b], self.positions[:b], cache, index))
            step()  # warm-up (it writes into the scratch page)
            self.replays[b], pool = capture(step, pool)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, ids, positions, index: CacheIndex):
        n = len(ids)
        b = next(x for x in self.buckets if x >= n)
        for static, value in ((self.ids, ids), (self.positions, positions), (self.seqlens, index.seqlens),
                              (self.slots, index.slots)):
            static[n:b].zero_()
            static[:n] = value
        self.block_table[:b].zero_()
        self.block_table[:n, :index.block_table.shape[1]] = index.block_table
        self.replays[b]()
        return self.hidden[:n]


class Engine:
    """Continuous batching over a paged KV cache. A sequence is admitted when the pages of its tokens fit (a
    prompt, or a preempted sequence's prompt and tokens so far: recomputed), gets a page whenever its next token
    starts one, and gives its pages back when it finishes. When a decode step finds no free page, the youngest
    sequence is preempted: its pages are freed and it waits at the front of the queue to be prefilled again."""

    def __init__(self, model, n_pages, page_size, batch_size, max_prefill_tokens, max_len, cuda_graphs):
        self.model, self.device = model, model.lm_head.weight.device
        self.cache = KVCache(model.config, n_pages, page_size, model.lm_head.weight.dtype, self.device)
        self.page_size, self.batch_size, self.max_prefill_tokens = page_size, batch_size, max_prefill_tokens
        self.max_len = max_len  # the longest sequence (prompt and answer) it serves
        self.kv_memory = None   # the kv_memory it was sized from (engine_for reuses it only for the same)
        self.graphs = None
        if cuda_graphs:
            # the graphs' block table as wide as the longest sequence: flash-attn takes seqlen_k from its width
            # and fixes its split-KV count when the graph is captured (set_params_splitkv in flash_api.cpp)
            self.graphs = DecodeGraphs(model, self.cache, batch_size, self.pages_for(max_len))
        self.start([], (0.0, 1.0, 0), set())

    def start(self, seqs: list[Sequence], sampling, stops):
        """A new call: these sequences to generate, with these sampling settings."""
        # free pages, the lowest granted first, so that the pages in use stay packed at the start of the cache;
        # page 0 is scratch, never granted
        self.free = list(range(1, self.cache.n_pages))
        self.sampling, self.stops = sampling, stops
        self.waiting, self.running = deque(seqs), []
        self.preemptions, self.peak_pages = 0, 0

    def to_device(self, values, dtype=torch.int64) -> torch.Tensor:
        """A host list as a tensor on the engine's device without waiting for the GPU: staged in pinned memory and
        copied asynchronously. torch.tensor(values, device="cuda") copies from pageable memory, which synchronises
        the stream (memcpy_and_sync in aten/src/ATen/native/cuda/Copy.cu): the CPU would wait for every kernel
        queued before."""
        pinned = self.device.type == "cuda"
        return torch.tensor(values, dtype=dtype, pin_memory=pinned).to(self.device, non_blocking=pinned)

    def pages_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.page_size)

    def grant(self, seq: Sequence, n_tokens: int):
        while len(seq.pages) < self.pages_for(n_tokens):
            seq.pages.append(heapq.heappop(self.free))
        self.peak_pages = max(self.peak_pages, self.cache.n_pages - 1 - len(self.free))

    def release(self, seq: Sequence):
        for page in seq.pages:
            heapq.heappush(self.free, page)
        seq.pages, seq.cached = [], 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.pages[position // self.page_size] * self.page_size + position % self.page_size

    def admit(self) -> list[Sequence]:
        """The waiting sequences to prefill now, first come first served."""
        batch, n_tokens = [], 0
        # keep a page for every running sequence whose next token starts one, so the next decode step can run
        reserve = sum(s.cached % self.page_size == 0 for s in self.running)
        while self.waiting and len(self.running) + len(batch) < self.batch_size:
            seq = self.waiting[0]
            length = len(seq.prompt) + len(seq.tokens)
            if (batch and n_tokens + length > self.max_prefill_tokens) or \
                    self.pages_for(length + 1) + reserve > len(self.free):
                break
            self.grant(self.waiting.popleft(), length)
            batch.append(seq)
            n_tokens += length
        return batch

    def prefill(self, batch: list[Sequence]):
        """The prompts (and, for a preempted sequence, its tokens so far) packed in one row, each from position 0."""
        ids, positions, slots, lengths = [], [], [], []
        for seq in batch:
            tokens = seq.prompt + seq.tokens
            ids += tokens
            positions += range(len(tokens))
            slots += [self.slot(seq, p) for p in range(len(tokens))]
            lengths.append(len(tokens))
            seq.cached = len(tokens)
        bounds = [0, *itertools.accumulate(lengths)]
        index = CacheIndex(self.to_device(slots), doc_lengths=lengths, cu_seqlens=self.to_device(bounds, torch.int32))
        hidden = self.model(self.to_device([ids]), self.to_device([positions]), self.cache, index)
        ends = self.to_device([b - 1 for b in bounds[1:]])
        self.running += batch
        return batch, hidden[0, ends]

    def decode(self):
        """One token for every running sequence; preempts the youngest while pages are short."""
        needed = lambda: sum(s.cached % self.page_size == 0 for s in self.running)
        while needed() > len(self.free):
            victim = self.running.pop()
            self.release(victim)
            self.waiting.appendleft(victim)
            self.preemptions += 1
        batch = sorted(self.running, key=lambda s: s.pages[0])  # by page: see first_page
        for seq in batch:
            self.grant(seq, seq.cached + 1)
        width = max(len(s.pages) for s in batch)
        # one page per row, in consecutive pages: the SDPA decode reads the cache in place
        one_each = width == 1 and batch[-1].pages[0] - batch[0].pages[0] == len(batch) - 1
        # the step's integer tensors, copied without a sync (to_device): the step's one sync is the sampled tokens
        ids, positions = self.to_device([[s.tokens[-1]] for s in batch]), self.to_device([[s.cached] for s in batch])
        index = CacheIndex(
            slots=self.to_device([self.slot(s, s.cached) for s in batch]),
            block_table=self.to_device([s.pages + [0] * (width - len(s.pages)) for s in batch], torch.int32),
            seqlens=self.to_device([s.cached for s in batch], torch.int32),
            first_page=batch[0].pages[0] if one_each else None, max_len=max(s.cached for s in batch) + 1)
        use_graph = self.graphs is not None and len(batch) <= self.graphs.buckets[-1]
        hidden = self.graphs(ids, positions, index) if use_graph else self.model(ids, positions, self.cache, index)
        for seq in batch:
            seq.cached += 1
        return list(batch), hidden[:, 0]

    def sample(self, batch: list[Sequence], hidden) -> list[int]:
        """The next token of every sequence of the batch: one vectorised draw, one read back to the host. A row whose
        logits are not finite (a diverged or damaged model) reads back -1, in the same read: the step stops."""
        temperature, top_p, top_k = self.sampling
        u = None
        if temperature:
            keys, steps = self.to_device([s.key for s in batch]), self.to_device([len(s.tokens) for s in batch])
            u = uniforms(keys, steps)
        logits = self.model.lm_head(hidden)
        # (a row's sum is not finite when one of its logits is not, or when they are so large the model diverged)
        tokens = sample_tokens(logits, temperature, top_p, top_k, u).masked_fill(~logits.sum(-1).isfinite(), -1)
        if -1 in (tokens := tokens.tolist()):
            raise ValueError("the model's logits are not finite (NaN or inf): its weights diverged or are damaged; "
                             "no completion of this step was kept")
        return tokens

    @torch.no_grad()
    def step(self) -> tuple[int, list[tuple[Sequence, str]]]:
        """A prefill if a waiting sequence can start, else a decode step. Returns the number of tokens made and
        the sequences that finished."""
        admitted = self.admit() if self.waiting and len(self.running) < self.batch_size else []
        if not admitted and not self.running:
            raise RuntimeError("the KV cache cannot hold the next waiting sequence even alone")
        batch, hidden = self.prefill(admitted) if admitted else self.decode()
        finished = []
        for seq, token in zip(batch, self.sample(batch, hidden)):
            seq.tokens.append(token)
            done = "stop" if token in self.stops else "length" if len(seq.tokens) >= seq.limit else None
            if done:
                self.running.remove(seq)
                self.release(seq)
                finished.append((seq, done))
        return len(batch), finished


# -----------------------------------------------------------------------------
# one engine per model per process, as vLLM's LLM object and nano-vllm's ModelRunner: its KV cache sized and
# its CUDA graphs captured once, then reused by every generate call with that model; released (cache and graphs
# freed, the allocator emptied) before another model's is built, or by release_engine()

_engine: Engine | None = None


def release_engine():
    """Free the engine's KV cache and CUDA graphs, and give their memory back to the driver."""
    global _engine
    _engine = None
    gc.collect()  # the graphs and the cache may sit in reference cycles
    torch.cuda.empty_cache()  # a no-op where CUDA was never used


def engine_for(model, page_size, rows, longest, max_prefill_tokens, kv_memory, cuda_graphs, progress) -> Engine:
    """The model's engine: the one built before if it can serve this call (the same pages and settings, as many
    rows, sequences as long), else a new one, after the old one is released."""
    global _engine
    e = _engine
    if e is not None and e.model is model and (e.page_size, e.kv_memory, e.graphs is not None) == \
            (page_size, kv_memory, cuda_graphs) and e.batch_size >= rows and e.max_len >= longest:
        return e
    del e  # a reference held here would keep the old cache alive through the release (tested)
    release_engine()
    context = model.config.max_position_embeddings
    # on a GPU the engine serves sequences up to the next 1024 tokens, so that the benchmarks of one evaluation
    # (prompts of different lengths) share it
    max_len = min(context, -(-longest // 1024) * 1024) if model.lm_head.weight.is_cuda else longest
    prefill_tokens = min(context, max(max_prefill_tokens, max_len))  # a prefill batch, or one preempted sequence
    n_pages = kv_pages(model, page_size, kv_memory, max_len, rows, prefill_tokens, progress)
    _engine = Engine(model, n_pages, page_size, rows, max_prefill_tokens, max_len, cuda_graphs)
    _engine.kv_memory = kv_memory
    return _engine


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], max_new_tokens: int, temperature=0.0, top_p=1.0,
             top_k=0, n=1, stop_ids=(), seed=0, batch_size=32, max_prefill_tokens=8192, on_finish=None,
             progress=False, kv_memory=None, page_size=None, cuda_graphs=None, stats=None) -> list[list[Completion]]:
    """Generate n completions for every prompt (token ids). Returns outs[prompt][sample].
    kv_memory: bytes of KV cache (see memory.kv_pages); page_size: tokens per page (see below); cuda_graphs: capture the
    decode step (default: on CUDA with flash-attn); stats: a dict that receives the engine's counts (peak pages
    in use, preemptions, page bytes). The engine (KV cache, CUDA graphs) stays for the next call with this model
    (engine_for); release_engine() frees it."""
    cfg, device = model.config, model.lm_head.weight.device
    context = cfg.max_position_embeddings
    for i, p in enumerate(prompts):
        if not 0 < len(p) < context:
            raise ValueError(f"prompt {i} has {len(p)} tokens; it must have 1 to {context - 1} (the model's context)")
    flash = model.uses_flash(device, model.lm_head.weight.dtype)
    if cuda_graphs is None:
        cuda_graphs = flash and device.type == "cuda"
    seqs = [Sequence(i * n + j, p, min(max_new_tokens, context - len(p)),
                     sequence_key(seed, p, j) if temperature else 0) for i, p in enumerate(prompts) for j in range(n)]
    outs = [[None] * n for _ in prompts]
    if not seqs:
        return outs
    # pages of 256 tokens on a GPU, which flash-attn's paged kernels read in place (they need a multiple of 256);
    # on CPU one page per sequence (the longest): SDPA then reads the running rows' consecutive pages in place,
    # where small pages would be gathered every step (2-3x slower decoding on the bench model). Other sizes work.
    longest = max(len(s.prompt) + s.limit for s in seqs)
    page_size = page_size or (256 if flash or device.type == "cuda" else longest)
    rows = batch_size if device.type == "cuda" else max(1, min(batch_size, len(seqs)))
    engine = engine_for(model, page_size, rows, longest, max_prefill_tokens, kv_memory, cuda_graphs, progress)
    engine.start(seqs, (temperature, top_p, top_k), set(stop_ids))
    t0, last_log, n_tokens, n_done = time.time(), time.time(), 0, 0
    while engine.waiting or engine.running:
        made, finished = engine.step()
        n_tokens += made
        for seq, finish in finished:
            i, j = divmod(seq.number, n)
            outs[i][j] = Completion(seq.tokens, finish)
            n_done += 1
            if on_finish:
                on_finish(i, j, outs[i][j])
        if progress and (time.time() - last_log > 5 or n_done == len(seqs)):
            last_log = time.time()
            print(f"sample: {n_done}/{len(seqs)} done | {n_tokens} tokens | {n_tokens / (last_log - t0):.1f} tok/s"
                  f" | {engine.preemptions} preempted", file=sys.stderr, flush=True)
    if stats is not None:
        stats.update(peak_pages=engine.peak_pages, preemptions=engine.preemptions, page_size=page_size,
                     page_bytes=KVCache.page_bytes(cfg, page_size, model.lm_head.weight.dtype),
                     pages=engine.cache.n_pages)
    return outs


if __name__ == "__main__":  # the command line, in prompts.py beside the files of --prompts, with this engine
    from prompts import command
    command(generate)
