"""A pure-torch stand-in for flash-attn with the exact signatures and semantics of the two functions
model.py calls, so their call sites run on CPU. Slow loops on purpose: clarity over speed."""
import torch
import torch.nn.functional as F


def _attend(q, k, v, scale, causal):
    """q: (Tq, H, D), k/v: (Tk, Hk, D); causal aligned to the bottom right, as flash-attn does."""
    Tq, H, D = q.shape
    Tk, Hk, _ = k.shape
    k, v = k.repeat_interleave(H // Hk, dim=1), v.repeat_interleave(H // Hk, dim=1)
    s = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * (scale if scale is not None else D ** -0.5)
    if causal:
        allowed = torch.arange(Tk)[None, :] <= torch.arange(Tq)[:, None] + (Tk - Tq)
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", F.softmax(s, -1), v.float()).to(q.dtype)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    assert cu_seqlens_q.dtype == torch.int32 and cu_seqlens_k.dtype == torch.int32
    out = torch.empty_like(q)
    for i in range(len(cu_seqlens_q) - 1):
        a, b = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        c, d = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        assert b - a <= max_seqlen_q and d - c <= max_seqlen_k
        out[a:b] = _attend(q[a:b], k[c:d], v[c:d], softmax_scale, causal)
    return out


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    assert rotary_cos is None and block_table is None and cache_leftpad is None
    B, Tq = q.shape[:2]
    idx = cache_batch_idx.tolist() if cache_batch_idx is not None else list(range(B))
    lens = cache_seqlens.tolist()
    assert cache_seqlens.dtype == torch.int32
    out = torch.empty_like(q)
    for b in range(B):
        n = lens[b]
        if k is not None:  # append the new keys/values in place, as flash-attn does
            k_cache[idx[b], n:n + k.shape[1]] = k[b]
            v_cache[idx[b], n:n + v.shape[1]] = v[b]
            n += k.shape[1]
        out[b] = _attend(q[b], k_cache[idx[b], :n], v_cache[idx[b], :n], softmax_scale, causal)
    return out
