"""A pure-torch stand-in for flash-attn 2.8.x: the exact signatures and semantics of the two functions model.py
calls, the argument handling of their Python wrappers, and the input checks of the real kernels, so that their
call sites run (and fail) on CPU as on a GPU.

Read from flash-attn v2.8.3: flash_attn/flash_attn_interface.py (the wrappers make a tensor whose last dimension
is not contiguous contiguous, and turn an int cache_seqlens into a tensor) and csrc/flash_attn/flash_api.cpp
(mha_varlen_fwd, mha_fwd_kvcache), with their messages: fp16/bf16 only, q/k/v of one dtype, contiguous last
dimensions, head_dim <= 256, heads divisible by kv heads, int32 and contiguous cu_seqlens / seqlens_k,
int32 cache_batch_idx / block_table, paged-KV pages a multiple of 256 tokens and no cache_batch_idx with a
block_table, every CHECK_SHAPE, and seqlen_q <= seqlen_k when new keys are appended. Left out: the device checks
(the point is to run on CPU). A head_dim that is not a multiple of 8 is not an error in 2.8.x: the Python wrapper
(varlen) and the C++ (kvcache) zero-pad it, so the stand-in accepts it too. The attention is computed in tensor
ops only: the real kernels never read cache_seqlens or cu_seqlens back to the host (flash_api.cpp passes their
device pointers; the wrapper turns an int into a device tensor), so the stand-in does not either, and a step run
through it is sync-counted as on a GPU. Every query against every key, masked: clarity over speed."""
import torch
import torch.nn.functional as F


def _check(condition, message, error=RuntimeError):
    if not condition:
        raise error(message)


def _shape(x, name, dims: dict):
    """CHECK_SHAPE(x, dims...): its message names the dimensions as the C++ source does."""
    _check(tuple(x.shape) == tuple(dims.values()), f"{name} must have shape ({', '.join(dims)})")


def _contiguous_last(x):
    """maybe_contiguous of the Python wrapper."""
    return x.contiguous() if x is not None and x.stride(-1) != 1 else x


def _check_qkv(q, k, v, key_names=("key", "value")):
    _check(q.dtype in (torch.float16, torch.bfloat16), "FlashAttention only support fp16 and bf16 data type")
    _check(k.dtype == q.dtype, f"query and {key_names[0]} must have the same dtype")
    _check(v.dtype == q.dtype, f"query and {key_names[1]} must have the same dtype")
    for t in (q, k, v):
        _check(t.stride(-1) == 1, "Input tensor must have contiguous last dimension")
    _check(q.shape[-1] <= 256, "FlashAttention forward only supports head dimension at most 256")
    _check(q.shape[-2] % k.shape[-2] == 0, "Number of heads in key/value must divide number of heads in query")


def _check_pages(block_table, k_cache):
    _check(block_table.dtype == torch.int32, "block_table must have dtype torch.int32")
    _check(block_table.stride(-1) == 1, "block_table must have contiguous last dimension")
    _check(k_cache.shape[1] % 256 == 0, "Paged KV cache block size must be divisible by 256")


def _attend(q, k, v, scale, visible):
    """q: (B, Tq, H, D), k/v: (B, Tk, Hk, D), visible: (B, Tq, Tk) -> (B, Tq, H, D). Pure tensor ops: like the real
    kernels, the stand-in never reads a tensor back to the host (a sync on a GPU)."""
    H, Hk, D = q.shape[2], k.shape[2], q.shape[3]
    k, v = k.repeat_interleave(H // Hk, dim=2), v.repeat_interleave(H // Hk, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * (scale if scale is not None else D ** -0.5)
    s = s.masked_fill(~visible[:, None], float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", F.softmax(s, -1), v.float()).to(q.dtype).contiguous()  # (a new tensor)


def _causal(q_pos, k_pos, q_len, k_len):
    """Causal visibility aligned to the bottom right, as flash-attn's: key position j is visible to query position i
    of a sequence of q_len queries over k_len keys when j <= i + k_len - q_len (and j < k_len)."""
    return (k_pos <= q_pos + (k_len - q_len)) & (k_pos < k_len)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    q, k, v = (_contiguous_last(t) for t in (q, k, v))  # the Python wrapper
    _check_qkv(q, k, v)
    _check(cu_seqlens_q.dtype == torch.int32, "cu_seqlens_q must have dtype int32")
    _check(cu_seqlens_k.dtype == torch.int32, "cu_seqlens_k must have dtype int32")
    if block_table is not None:
        _check_pages(block_table, k)
    _check(cu_seqlens_q.is_contiguous(), "cu_seqlens_q must be contiguous")
    _check(cu_seqlens_k.is_contiguous(), "cu_seqlens_k must be contiguous")
    batch_size, (total_q, num_heads, head_size), num_heads_k = cu_seqlens_q.numel() - 1, q.shape, k.shape[-2]
    _check(batch_size > 0, "batch size must be positive")
    if block_table is None:
        _shape(k, "k", dict(total_k=k.shape[0], num_heads_k=num_heads_k, head_size=head_size))
        _shape(v, "v", dict(total_k=k.shape[0], num_heads_k=num_heads_k, head_size=head_size))
    else:
        dims = dict(num_blocks=k.shape[0], page_block_size=k.shape[1], num_heads_k=num_heads_k, head_size=head_size)
        _shape(k, "k", dims)
        _shape(v, "v", dims)
        _shape(block_table, "block_table", dict(batch_size=batch_size, max_num_blocks_per_seq=block_table.shape[-1]))
    _shape(cu_seqlens_q, "cu_seqlens_q", {"batch_size + 1": batch_size + 1})
    _shape(cu_seqlens_k, "cu_seqlens_k", {"batch_size + 1": batch_size + 1})
    _check(block_table is None, "the stand-in computes varlen attention without a block_table (model.py passes "
           "none)", NotImplementedError)
    # every query against every key, masked to its own sequence: the sequences' ids and positions from cu_seqlens
    doc_q = torch.searchsorted(cu_seqlens_q[1:], torch.arange(total_q, device=q.device), right=True)
    doc_k = torch.searchsorted(cu_seqlens_k[1:], torch.arange(k.shape[0], device=q.device), right=True)
    pos_q, pos_k = torch.arange(total_q) - cu_seqlens_q[doc_q], torch.arange(k.shape[0]) - cu_seqlens_k[doc_k]
    lens_q, lens_k = (cu[1:] - cu[:-1] for cu in (cu_seqlens_q, cu_seqlens_k))
    visible = doc_q[:, None] == doc_k[None, :]
    if causal:
        visible &= _causal(pos_q[:, None], pos_k[None, :], lens_q[doc_q][:, None], lens_k[doc_q][:, None])
    return _attend(q[None], k[None], v[None], softmax_scale, visible[None])[0]


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    assert rotary_cos is None and cache_leftpad is None  # not used by model.py
    # the Python wrapper
    _check(k_cache.stride(-1) == 1, "k_cache must have contiguous last dimension", AssertionError)
    _check(v_cache.stride(-1) == 1, "v_cache must have contiguous last dimension", AssertionError)
    q, k, v = (_contiguous_last(t) for t in (q, k, v))
    if isinstance(cache_seqlens, int):  # (sized by k_cache.shape[0], the pages when paged: as the wrapper does)
        cache_seqlens = torch.full((k_cache.shape[0],), cache_seqlens, dtype=torch.int32, device=k_cache.device)
    cache_batch_idx, block_table = _contiguous_last(cache_batch_idx), _contiguous_last(block_table)
    # mha_fwd_kvcache
    _check_qkv(q, k_cache, v_cache)
    paged = block_table is not None
    if paged:
        _check(cache_batch_idx is None, "Paged KVcache does not support cache_batch_idx")
        _check_pages(block_table, k_cache)
    batch_size, seqlen_q, num_heads, head_size = q.shape
    num_heads_k = k_cache.shape[2]
    seqlen_k = block_table.shape[1] * k_cache.shape[1] if paged else k_cache.shape[1]
    _check(batch_size > 0, "batch size must be positive")
    if paged:
        dims = dict(num_blocks=k_cache.shape[0], page_block_size=k_cache.shape[1], num_heads_k=num_heads_k,
                    head_size_og=head_size)
        _shape(k_cache, "kcache", dims)
        _shape(v_cache, "vcache", dims)
        _shape(block_table, "block_table", dict(batch_size=batch_size, max_num_blocks_per_seq=block_table.shape[1]))
    else:
        dims = dict(batch_size_c=k_cache.shape[0], seqlen_k=seqlen_k, num_heads_k=num_heads_k, head_size_og=head_size)
        _shape(k_cache, "kcache", dims)
        _shape(v_cache, "vcache", dims)
    if k is not None:
        _check(v is not None, "If key is supplied, value must also be passed in")
        _check(cache_seqlens is not None, "If key is supplied, seqlens_k must also be passed in")
        _check(seqlen_q <= seqlen_k, "If key is supplied, it must have seqlen <= the seqlen of the KV cache")
        _check(k.dtype == q.dtype, "Key must have the same dtype as query")
        _check(v.dtype == q.dtype, "Value must have the same dtype as query")
        dims = dict(batch_size=batch_size, seqlen_knew=k.shape[1], num_heads_k=num_heads_k, head_size_og=head_size)
        _shape(k, "k", dims)
        _shape(v, "v", dims)
    if cache_seqlens is not None:
        _check(cache_seqlens.dtype == torch.int32, "seqlens_k must have dtype int32")
        _check(cache_seqlens.is_contiguous(), "seqlens_k must be contiguous")
        _shape(cache_seqlens, "seqlens_k", dict(batch_size=batch_size))
    _check(cache_batch_idx is None or cache_batch_idx.dtype == torch.int32, "cache_batch_idx must have dtype int32")
    # the keys of every row, and the new ones appended in place at cache_seqlens, as flash-attn does
    new = k.shape[1] if k is not None else 0
    lens = cache_seqlens if cache_seqlens is not None else torch.full((batch_size,), k_cache.shape[1])
    at = lens[:, None] + torch.arange(new)  # (batch, new): the new tokens' positions
    if paged:
        page = k_cache.shape[1]
        where = (block_table.gather(1, (at // page).long()), at % page)
        rows = lambda cache: cache[block_table.long()].reshape(batch_size, seqlen_k, *cache.shape[2:])
    else:
        idx = cache_batch_idx.long() if cache_batch_idx is not None else torch.arange(batch_size)
        where = (idx[:, None], at)
        rows = lambda cache: cache[idx]
    if k is not None:
        k_cache[where], v_cache[where] = k, v
    keys, values = rows(k_cache), rows(v_cache)
    n = lens + new
    positions = torch.arange(keys.shape[1])
    visible = _causal(torch.arange(seqlen_q)[None, :, None], positions[None, None, :], seqlen_q, n[:, None, None]) \
        if causal else (positions[None, None, :] < n[:, None, None]).expand(batch_size, seqlen_q, -1)
    return _attend(q, keys, values, softmax_scale, visible)


# -----------------------------------------------------------------------------
# torch's SDPA as CUDA takes it: the rules model.py's SDPA calls rely on, which the CPU kernels do not enforce


class CudaSdpaRules(torch.overrides.TorchFunctionMode):
    """Every F.scaled_dot_product_attention call checked against what CUDA's fused kernels require:
    - an attn_mask is boolean or of the query's dtype: the memory-efficient kernel refuses another ("invalid dtype
      for bias - should match query's dtype", aten/src/ATen/native/transformers/cuda/attention.cu), and the cuDNN
      kernel, which torch prefers on Hopper, reads a float32 mask as bf16 without an error (pytorch PR #191612);
    - its last dimension is contiguous (sdp_utils_cpp.h: the efficient kernel's mask stride check);
    - q, k and v are 4-D (batch, heads, seq, head_dim): with fewer dimensions only the math kernel runs
      (check_tensor_shapes in sdp_utils_cpp.h), which builds the whole (seq x seq) score matrix.
    calls counts the calls checked (a test that meets none has checked nothing)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            _check(all(t.dim() == 4 for t in (q, k, v)), "SDPA's fused CUDA kernels need 4-D q, k and v")
            if mask is not None:
                _check(mask.dtype in (torch.bool, q.dtype), f"invalid dtype for bias - should match query's dtype "
                       f"(mask {mask.dtype}, query {q.dtype})")
                _check(mask.stride(-1) == 1, "attn_mask must have a contiguous last dimension")
            self.calls += 1
        return func(*args, **kwargs)
