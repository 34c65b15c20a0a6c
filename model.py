"""
The R1-Distill decoder: one readable transformer for the Qwen2, Llama and Qwen3 families, loaded from
and saved to Hugging Face safetensors checkpoints.

    import torch, model
    m = model.Transformer.from_pretrained("models/DeepSeek-R1-Distill-Qwen-7B", dtype=torch.bfloat16, device="cuda")
    hidden = m(input_ids, positions)          # (B, T, hidden_size)
    logits = m.lm_head(hidden)                # compute logits only where you need them (vocab is 152k)
    m.save_pretrained("out/ckpt")             # config.json + safetensors shards, loadable by transformers/vLLM

Parameter names are exactly the Hugging Face ones (model.layers.0.self_attn.q_proj.weight, ...), so a
checkpoint maps onto the modules one to one.

Packing: a row may hold several documents. A document starts wherever `positions` is 0; attention never
crosses documents. Training packs examples this way and generation prefills several prompts in one row.

Attention has two backends with one semantics: flash-attn (varlen for packed rows, with_kvcache for
decoding) when it is installed and the tensors are on CUDA, torch SDPA otherwise.

KV cache: a paged cache (KVCache) and a CacheIndex from the engine: every token writes its key and value to its
slot (page * page_size + offset). A forward with T > 1 is a prefill (packed prompts, each starting at position
0); with T == 1 it is a decode step in which each row attends to the tokens of its block table.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import Weights, hf_parts, model_digest, read_config, save_model

try:  # optional, GPU only (make gpu-install); without it CUDA runs use torch's SDPA, which is slower
    import flash_attn
    FLASH_ERROR = None
except ImportError as e:  # not installed, or installed but broken (built for another torch or CUDA): said, not hidden
    flash_attn, FLASH_ERROR = None, None if e.name == "flash_attn" else f"{type(e).__name__}: {e}"

def flash_eligible(device, dtype) -> bool:
    """The automatic choice of attention kernel: flash-attn when it is installed and the tensors are on CUDA in
    fp16 or bf16 (its kernels refuse anything else: "FlashAttention only support fp16 and bf16 data type" in
    csrc/flash_attn/flash_api.cpp); torch's SDPA otherwise."""
    return flash_attn is not None and torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16)


def attention_summary(device, dtype) -> str:
    """The one line every script prints at start: which attention kernel runs, in which dtype."""
    name = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float32", "fp32")
    if flash_eligible(device, dtype):
        return f"attention: flash-attn {flash_attn.__version__} varlen, {name}"
    why = ""
    if torch.device(device).type == "cuda":
        why = f" (flash-attn does not import: {FLASH_ERROR})" if FLASH_ERROR else \
            " (flash-attn is not installed: make gpu-install)" if flash_attn is None else \
            " (flash-attn takes fp16 and bf16 only)"
    return f"attention: torch SDPA{why}, {name}"


ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3"}


# -----------------------------------------------------------------------------
# configuration

@dataclass
class Config:
    family: str                 # qwen2 | llama | qwen3
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None   # llama3 frequency scaling, or None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool        # q/k/v bias (Qwen2: always)
    qk_norm: bool               # RMSNorm on each head of q and k (Qwen3)
    hf: dict                    # the original config.json, written back unchanged on save

    @classmethod
    def read(cls, path):
        """The config of a model directory (its config.json, checked)."""
        return cls.from_hf(read_config(path), str(Path(path) / "config.json"))

    @classmethod
    def from_hf(cls, hf: dict, where: str = "config.json"):
        arch = (hf.get("architectures") or [None])[0]
        if arch not in ARCHITECTURES:
            raise ValueError(f"{where}: architecture {arch!r} is not supported; nanoTLDR runs "
                             f"{', '.join(ARCHITECTURES)} (the DeepSeek-R1-Distill family)")
        family = ARCHITECTURES[arch]
        if hf.get("use_sliding_window"):
            raise ValueError(f"{where}: use_sliding_window=true is not supported (R1-Distill models do not use it)")
        # transformers >= 5 writes rope settings as `rope_parameters`; Hub checkpoints use rope_theta/rope_scaling
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise ValueError(f"{where}: rope type {rope_type!r} is not supported (default or llama3)")
        try:
            heads = hf["num_attention_heads"]
            return cls(
                family=family, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                intermediate_size=hf["intermediate_size"], num_hidden_layers=hf["num_hidden_layers"],
                num_attention_heads=heads, num_key_value_heads=hf.get("num_key_value_heads", heads),
                head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
                rms_norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(theta),
                rope_scaling=rope if rope_type == "llama3" else None,
                max_position_embeddings=hf.get("max_position_embeddings", 32768),
                tie_word_embeddings=hf.get("tie_word_embeddings", False),
                attention_bias=family == "qwen2" or hf.get("attention_bias", False),
                qk_norm=family == "qwen3", hf=hf)
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e.args[0]!r}") from None


def rope_inv_freq(cfg: Config) -> torch.Tensor:
    """Inverse frequencies of NeoX-style rotary embeddings, with Llama 3's long-context rescaling (on the host,
    even under the meta device: see Transformer's embedding)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))
    if cfg.rope_scaling is None:
        return inv_freq
    s = cfg.rope_scaling
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are stretched by `factor`, short ones kept, the band between interpolated
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


# -----------------------------------------------------------------------------
# attention: what every layer of one forward pass needs to know, computed once

class KVCache:
    """A paged KV cache: per layer, pages of `page_size` tokens, head-major: (pages, kv_heads, page_size,
    head_dim), so that a page of one head is contiguous and the SDPA decode gathers whole pages. flash-attn's
    paged kernels read the (pages, page_size, kv_heads, head_dim) view through strides (they need only the last
    dimension contiguous, and pages of a multiple of 256 tokens). A sequence's keys live in the pages of its
    block table, in order; a token's slot is page * page_size + offset. The engine (sample.py) grants and frees
    pages. Page 0 is never granted: the padded rows of a bucketed decode step write there."""

    def __init__(self, cfg: Config, n_pages: int, page_size: int, dtype: torch.dtype, device):
        shape = (n_pages, cfg.num_key_value_heads, page_size, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self.n_pages, self.kv_heads, self.page_size = n_pages, cfg.num_key_value_heads, page_size
        # (keys, values): per layer, a row per page of one head: what the SDPA decode gathers
        self.pages = tuple([t.view(-1, page_size, cfg.head_dim) for t in c] for c in (self.k, self.v))

    @staticmethod
    def page_bytes(cfg: Config, page_size: int, dtype: torch.dtype) -> int:
        return 2 * cfg.num_hidden_layers * page_size * cfg.num_key_value_heads * cfg.head_dim * dtype.itemsize


@dataclass
class CacheIndex:
    """Where the tokens of a cached forward go and what they attend to: integer tensors the engine builds once
    per step, in their final dtype, from what it knows on the host (so the forward never waits on the device)."""
    slots: torch.Tensor                      # (tokens,) int64: the cache slot each token's key and value go to
    doc_lengths: list | None = None          # prefill: the packed prompts' lengths (each starts at position 0)
    cu_seqlens: torch.Tensor | None = None   # prefill: (prompts + 1,) int32, their boundaries in the row
    block_table: torch.Tensor | None = None  # decode: (rows, pages) int32, every row's pages in order
    seqlens: torch.Tensor | None = None      # decode: (rows,) int32, tokens of each row in the cache before this one
    first_page: int | None = None            # sdpa decode: the rows hold one page each: first_page, first_page + 1, ..
    max_len: int = 0                         # sdpa decode: the longest row after this token


@dataclass
class AttnInfo:
    flash: bool
    decode: bool
    rows: int                                # B: the forward's rows (tokens arrive flattened, B * T of them)
    cache: KVCache | None = None
    index: CacheIndex | None = None
    doc_lengths: list | None = None          # sdpa, packed: document lengths of the tokens; None: one per row
    cu_seqlens: torch.Tensor | None = None   # flash, packed: document boundaries in the flattened tokens
    max_seqlen: int = 0
    write_at: tuple | None = None            # cached: (page, kv head, offset), indices broadcasting to (tokens,
                                             # kv_heads): where every head vector of every token goes
    page_heads: torch.Tensor | slice | None = None  # sdpa decode: the page of each row and kv head, in order
    decode_bias: torch.Tensor | None = None  # sdpa decode: (rows, 1, 1, keys) 0 where a key is visible, else -inf,
                                             # in the compute dtype


def attn_info(positions: torch.Tensor, cache, index: CacheIndex | None, flash: bool, dtype) -> AttnInfo:
    B, T = positions.shape
    info = AttnInfo(flash=flash, decode=cache is not None and T == 1, rows=B, cache=cache, index=index)
    if cache is not None and not (flash and info.decode):  # (flash-attn's decode writes them itself)
        ps, heads = cache.page_size, torch.arange(cache.kv_heads, device=positions.device)
        info.write_at = (index.slots // ps)[:, None], heads, (index.slots % ps)[:, None]
    if info.decode:
        if not flash:  # the keys each row reads: its pages of every kv head, in order, masked past its length
            if index.first_page is None:  # gathered page by page (a page of one head is contiguous)
                info.page_heads = (index.block_table.long()[:, None, :] * len(heads) + heads[:, None]).view(-1)
            else:  # one page per row, consecutive (the CPU engine's layout): a slice, so the keys are a view
                info.page_heads = slice(index.first_page * len(heads), (index.first_page + B) * len(heads))
            # in the compute dtype: CUDA's memory-efficient kernel refuses a bias of another dtype than the query's,
            # and its cuDNN kernel reads a float32 bias as bf16 (pytorch PR #191612): wrong outputs, no error
            visible = torch.arange(index.max_len, device=positions.device) <= index.seqlens[:, None]
            info.decode_bias = torch.zeros(visible.shape, dtype=dtype, device=positions.device).masked_fill(
                ~visible, float("-inf"))[:, None, None]
        return info
    if index is not None:  # a prefill: the engine knows its documents
        lengths, cu_seqlens = index.doc_lengths, index.cu_seqlens
    else:  # training: a document starts wherever the position is 0
        starts = positions == 0
        starts[:, 0] = True  # a row always starts a document
        idx = torch.nonzero(starts.reshape(-1)).flatten()
        cu_seqlens = torch.cat([idx, torch.tensor([B * T], device=idx.device)])
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    if flash:
        info.cu_seqlens, info.max_seqlen = cu_seqlens.to(torch.int32), max(lengths)
    elif len(lengths) > B:  # packed rows: SDPA has no varlen kernel, so attention runs document by document
        info.doc_lengths = lengths
    return info


def attention(q, k, v, info: AttnInfo, layer: int):
    """q: (N, H, D), k/v: (N, Hkv, D) for the N = B * T tokens of the forward -> (N, H * D), o_proj's input.
    Writes k/v to the cache when there is one."""
    N, H, D = q.shape
    B, Hkv, cache, index = info.rows, k.shape[1], info.cache, info.index
    if info.flash and info.decode:
        # appends k/v at cache_seqlens in the row's pages, in place, then attends to all of the row's tokens
        out = flash_attn.flash_attn_with_kvcache(
            q.view(B, 1, H, D), cache.k[layer].transpose(1, 2), cache.v[layer].transpose(1, 2), k=k.view(B, 1, Hkv, D),
            v=v.view(B, 1, Hkv, D), cache_seqlens=index.seqlens, block_table=index.block_table, causal=True)
        return out.view(N, -1)
    if cache is not None:  # one index_put per tensor, into the head-major pages (flash-attn reads them by strides)
        cache.k[layer][info.write_at] = k
        cache.v[layer][info.write_at] = v
    if info.flash:  # a deterministic backward (one dq accumulator per split, summed in order): exact resume on GPUs
        return flash_attn.flash_attn_varlen_func(q, k, v, info.cu_seqlens, info.cu_seqlens, info.max_seqlen,
                                                 info.max_seqlen, causal=True, deterministic=True).view(N, -1)
    if info.decode:
        # one query per row, masked past its length; the keys are a view of consecutive pages, else gathered
        # (index_select: on CPU 2.5x faster than a tensor index). A kv head's query heads are one SDPA's queries
        pick = (lambda p: p[info.page_heads]) if isinstance(info.page_heads, slice) else \
            (lambda p: p.index_select(0, info.page_heads))
        keys, values = (pick(pages[layer]).view(B, Hkv, -1, D)[:, :, :index.max_len] for pages in cache.pages)
        out = F.scaled_dot_product_attention(q.view(B, Hkv, H // Hkv, D), keys, values, attn_mask=info.decode_bias)
        return out.view(N, -1)
    if info.doc_lengths is not None:
        # varlen's semantics, one document at a time. Always 4-D (batch, heads, seq, head_dim) with is_causal:
        # only then can torch pick a fused kernel (flash or memory-efficient on CUDA, flash on CPU), which never
        # builds the (seq x seq) score matrix (3 GB per head at 16k tokens in fp32)
        outs = []
        for qd, kd, vd in zip(*(t.split(info.doc_lengths) for t in (q, k, v))):
            outs.append(F.scaled_dot_product_attention(qd.transpose(0, 1)[None], kd.transpose(0, 1)[None],
                                                       vd.transpose(0, 1)[None], is_causal=True,
                                                       enable_gqa=True)[0].transpose(0, 1))
        return torch.cat(outs).view(N, -1)
    q, k, v = (t.view(B, N // B, -1, D).transpose(1, 2) for t in (q, k, v))  # one document per row
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2).reshape(N, -1)


# -----------------------------------------------------------------------------
# the model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # one kernel on CUDA (aten's _fused_rms_norm: in fp32 inside, rounded once to x's dtype); Hugging Face's
        # eager RMSNorm is 8 and rounds twice in bf16 (before and after the weight): a last-bit difference
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class SelfAttention(nn.Module):
    def __init__(self, cfg: Config, layer: int):
        super().__init__()
        self.layer, self.head_dim = layer, cfg.head_dim
        self.n_head, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        # q, k and v as one matrix product (Hugging Face's q_proj, k_proj and v_proj, concatenated: see FUSED)
        self.qkv_proj = nn.Linear(cfg.hidden_size, (self.n_head + 2 * self.n_kv) * self.head_dim,
                                  bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, info: AttnInfo):
        N, H = x.shape[0], self.n_head  # the tokens of every row, flattened: each linear is one matrix product
        qkv = self.qkv_proj(x).view(N, H + 2 * self.n_kv, self.head_dim)
        qk, v = qkv.split([H + self.n_kv, self.n_kv], 1)  # views; q and k are rotated together
        if hasattr(self, "q_norm"):
            qk = torch.cat((self.q_norm(qk[:, :H]), self.k_norm(qk[:, H:])), 1)
        # NeoX-style rotary embedding: each head's two halves rotated, qk * cos + (-x2, x1) * sin, written as a
        # roll times a sin whose first half is negated (made so once per forward)
        q, k = (qk * cos + qk.roll(self.head_dim // 2, -1) * sin).split([H, self.n_kv], 1)
        return self.o_proj(attention(q, k, v, info, self.layer))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)  # see FUSED
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: Config, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = SelfAttention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, info):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, info)
        return x + self.mlp(self.post_attention_layernorm(x))


class ChunkedCrossEntropy(torch.autograd.Function):
    """sum(scale x cross-entropy(h @ weight.T, targets)), `chunk` tokens at a time: the (tokens x vocab) logits
    never exist at once (16k tokens x 152k vocab is 10 GB in fp32), and backward recomputes each chunk's. The
    weight's gradient is summed over the chunks in fp32 and rounded once: under FSDP2's mixed precision the
    weight is bf16, and autograd would sum the chunks' gradients in bf16 (16 of them for a 16k-token row)."""

    @staticmethod
    def forward(ctx, h, weight, targets, scale, chunk):
        ctx.save_for_backward(h, weight, targets, scale)
        ctx.chunk = chunk
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, len(targets), chunk):
            loss = F.cross_entropy(F.linear(h[i:i + chunk], weight).float(), targets[i:i + chunk], reduction="none")
            total += (loss * scale[i:i + chunk]).sum()
        return total

    @staticmethod
    def backward(ctx, grad):
        h, weight, targets, scale = ctx.saved_tensors
        grad_h, grad_w = torch.empty_like(h), torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for i in range(0, len(targets), ctx.chunk):
            g = torch.softmax(F.linear(h[i:i + ctx.chunk], weight).float(), -1)  # d loss / d logits: p - onehot
            g[torch.arange(len(g), device=g.device), targets[i:i + ctx.chunk]] -= 1
            g = (g * (grad * scale[i:i + ctx.chunk])[:, None]).to(h.dtype)
            grad_h[i:i + ctx.chunk] = g @ weight
            grad_w += g.T @ h[i:i + ctx.chunk]
        return grad_h, grad_w.to(weight.dtype), None, None, None


class Transformer(nn.Module):
    attn_backend = "auto"  # "auto": flash_eligible's choice; "flash" or "sdpa" to force one
    loss_chunk = 1024      # target tokens per chunk of the loss: 1024 x 152k vocab x 12 bytes = 1.9 GB at once

    def __init__(self, cfg: Config):
        super().__init__()
        self.config = cfg
        self.model = nn.Module()  # the "model." prefix of the Hugging Face parameter names
        # no initialiser (every model is read from a checkpoint): on the meta device, normal_ goes through
        # torch._refs, whose first call imports torch._dynamo (1.5 s in every process)
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                               _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.model.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.gradient_checkpointing = False  # recompute each block in backward (train.py --activation_checkpointing)

    def uses_flash(self, device, dtype) -> bool:
        return self.attn_backend == "flash" or (self.attn_backend == "auto" and flash_eligible(device, dtype))

    def forward(self, input_ids, positions=None, cache: KVCache | None = None, index: CacheIndex | None = None,
                targets=None, scale=None):
        """Hidden states (B, T, hidden_size); with `targets` (B, T; -100 = no loss) the summed cross-entropy
        over the target tokens instead (each token's times its `scale`, B x T floats, when given), computed in
        chunks so the (tokens x vocab) logits never exist at once."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.model.embed_tokens(input_ids.reshape(-1))  # (B * T, hidden): the blocks see a list of tokens
        info = attn_info(positions, cache, index, self.uses_flash(x.device, x.dtype), x.dtype)  # x: the compute dtype
        freqs = positions.reshape(-1, 1).float() * self.inv_freq.float()  # rotary angles in fp32, like the reference
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        sin[..., :sin.shape[-1] // 2] *= -1  # (see SelfAttention)
        for block in self.model.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, info, use_reentrant=False)
            else:
                x = block(x, cos, sin, info)
        x = self.model.norm(x)
        if targets is None:
            return x.view(B, T, -1)
        return self.loss_sum(x, targets.reshape(-1), None if scale is None else scale.reshape(-1))

    def loss_sum(self, x, targets, scale=None):
        keep = targets != -100
        h, t = x[keep], targets[keep]
        s = torch.ones(len(t), device=h.device) if scale is None else scale[keep].float()
        # (x[:1] * 0).sum() keeps the graph connected (and every parameter in it) when no token counts
        return (x[:1] * 0).sum() + ChunkedCrossEntropy.apply(h, self.lm_head.weight, t, s, self.loss_chunk)

    # -- checkpoints -----------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, dtype=torch.float32, device="cpu"):
        """Build on the meta device (no memory), then assign the tensors read from the safetensors shards."""
        path = Path(path)
        cfg = Config.read(path)
        weights = Weights(path)
        weights.check(weight_shapes(cfg), cfg.tie_word_embeddings, str(path))
        m = cls.from_state_dict(cfg, {k: weights.read_ours(cfg, k, dtype, device) for k in our_names(cfg)})
        m.source = model_digest(path)
        return m

    @classmethod
    def from_state_dict(cls, cfg: Config, state: dict):
        """A model holding `state` (our names: the fused projections; a tied lm_head is not in it)."""
        with torch.device("meta"):
            m = cls(cfg)
        m.load_state_dict(state, strict=False, assign=True)
        if cfg.tie_word_embeddings:
            m.lm_head.weight = m.model.embed_tokens.weight
        m.inv_freq = rope_inv_freq(cfg).to(m.lm_head.weight.device)
        return m.eval()

    def save_pretrained(self, path, dtype=None, max_shard_bytes=5 * 2**30):
        """A Hugging Face model directory at `path`, written beside it and renamed into place."""
        save_model(self.config, self.tensors(), path, dtype or self.lm_head.weight.dtype, max_shard_bytes)

    def tensors(self) -> dict:
        """The state dict without a tied lm_head (it is the embedding): what a checkpoint stores."""
        return {k: v for k, v in self.state_dict().items()
                if not (self.config.tie_word_embeddings and k == "lm_head.weight")}


def our_names(cfg: Config) -> dict:
    """{our name: shape} of every tensor a model of this config holds (a tied lm_head is the embedding: not listed)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in Transformer(cfg).tensors().items()}


def weight_shapes(cfg: Config) -> dict:
    """{Hugging Face name: shape} of every tensor a checkpoint of this config stores (a tied lm_head is the
    embedding, stored once)."""
    return {hf: (n or shape[0], *shape[1:]) for name, shape in our_names(cfg).items() for hf, n in hf_parts(cfg, name)}
