"""model.py against transformers on tiny random checkpoints: logits, packing, KV cache, save/load, errors."""
import itertools
import json
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

import flash_standin
import model as M

FAMILIES = ["qwen2", "llama", "qwen3"]


def hf_model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_logits_match_transformers(tiny_models, family):
    ours, ref = M.Transformer.from_pretrained(tiny_models[family]), hf_model(tiny_models[family])
    ids = torch.randint(0, ours.config.vocab_size, (3, 150), generator=torch.Generator().manual_seed(0))
    err = (ours.lm_head(ours(ids)) - ref(ids).logits).abs().max().item()
    assert err < 1e-4, err


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lengths", [(7, 30, 1, 12), (5, 6, 5, 4, 5, 7, 5)])  # SDPA: a dense mask / padded documents
@torch.no_grad()
def test_packed_forward_equals_separate_forwards(tiny_models, family, lengths):
    m = M.Transformer.from_pretrained(tiny_models[family])
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(0, m.config.vocab_size, (n,), generator=g) for n in lengths]
    packed = m(torch.cat(docs)[None], torch.cat([torch.arange(len(d)) for d in docs])[None])[0]
    separate = torch.cat([m(d[None])[0] for d in docs])
    assert (packed - separate).abs().max().item() < 1e-5


def prefill_index(pages, page_size, lengths):
    """The CacheIndex of packed prompts, prompt k in the pages pages[k]."""
    slots = [p[t // page_size] * page_size + t % page_size for p, n in zip(pages, lengths) for t in range(n)]
    bounds = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    return M.CacheIndex(torch.tensor(slots), doc_lengths=list(lengths), cu_seqlens=bounds)


def decode_index(pages, page_size, positions):
    """The CacheIndex of one decode step: row k writes position positions[k] into its pages pages[k]."""
    width = max(map(len, pages))
    return M.CacheIndex(
        slots=torch.tensor([p[t // page_size] * page_size + t % page_size for p, t in zip(pages, positions)]),
        block_table=torch.tensor([p + [0] * (width - len(p)) for p in pages], dtype=torch.int32),
        seqlens=torch.tensor(positions, dtype=torch.int32), max_len=max(positions) + 1)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_paged_kv_cache_decoding_gives_full_forward_logits(tiny_models, family):
    """Prefill then decode one token at a time through pages of 4 tokens scattered over the cache."""
    m = M.Transformer.from_pretrained(tiny_models[family])
    seq = torch.randint(0, m.config.vocab_size, (40,), generator=torch.Generator().manual_seed(2))
    full = m.lm_head(m(seq[None]))[0]
    cache, pages, n_prompt = M.KVCache(m.config, 16, 4, torch.float32, "cpu"), [9, 3, 12, 1, 5, 14, 2, 7, 11, 4], 10
    h = m(seq[None, :n_prompt], torch.arange(n_prompt)[None], cache, prefill_index([pages], 4, [n_prompt]))
    steps = [m.lm_head(h[0, -1])]
    for t in range(n_prompt, len(seq)):
        h = m(seq[None, t:t + 1], torch.tensor([[t]]), cache, decode_index([pages], 4, [t]))
        steps.append(m.lm_head(h[0, 0]))
    assert (torch.stack(steps) - full[n_prompt - 1:]).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_flash_call_sites_match_sdpa(tiny_models, family, monkeypatch):
    """The flash-attn branches (varlen for packed prompts, with_kvcache on 256-token pages for decoding), in bf16
    as on a GPU, through a stand-in that checks inputs as the real kernels do, agree with the SDPA path."""
    monkeypatch.setattr(M, "flash_attn", flash_standin)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 200, (1, 48), generator=g)
    pos = torch.tensor([list(range(10)) + list(range(14)) + list(range(24))])  # three prompts packed in one row
    pages = [[3], [1], [2]]
    results = {}
    for dtype, backend in ((torch.float32, "sdpa"), (torch.bfloat16, "sdpa"), (torch.bfloat16, "flash")):
        m = M.Transformer.from_pretrained(tiny_models[family], dtype=dtype)
        m.attn_backend = backend
        cache = M.KVCache(m.config, 4, 256, dtype, "cpu")
        packed = m(ids, pos, cache, prefill_index(pages, 256, [10, 14, 24]))
        step = m(torch.tensor([[5], [6], [7]]), torch.tensor([[10], [14], [24]]), cache,
                 decode_index(pages, 256, [10, 14, 24]))
        assert packed.dtype == step.dtype == cache.k[0].dtype == dtype
        results[backend, dtype] = (packed.float(), step.float(), torch.stack(cache.k)[:, 1:].float())
    # in bf16 both backends are as far from the fp32 result as bf16 rounding takes them (these random models
    # have large activations: a few percent), and the flash path no further than SDPA's
    exact = results["sdpa", torch.float32]
    error = {b: [((x - y).abs().max() / y.abs().max()).item() for x, y in zip(results[b, torch.bfloat16], exact)]
             for b in ("sdpa", "flash")}
    for e_flash, e_sdpa in zip(error["flash"], error["sdpa"]):
        assert e_flash < 1.5 * e_sdpa + 0.01 and e_flash < 0.1, error


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_save_pretrained_loads_in_transformers(tiny_models, family, tmp_path):
    m = M.Transformer.from_pretrained(tiny_models[family])
    ids = torch.randint(0, m.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(4))
    m.save_pretrained(tmp_path / "one")
    m.save_pretrained(tmp_path / "sharded", max_shard_bytes=20_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    want = m.lm_head(m(ids))
    for d in ("one", "sharded"):
        assert (hf_model(tmp_path / d)(ids).logits - want).abs().max().item() < 1e-5
        again = M.Transformer.from_pretrained(tmp_path / d)
        assert torch.equal(again.lm_head(again(ids)), want)
    m.save_pretrained(tmp_path / "one")  # overwriting an existing checkpoint directory
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_from_pretrained_bf16_keeps_rope_in_fp32(tiny_models):
    m = M.Transformer.from_pretrained(tiny_models["qwen2"], dtype=torch.bfloat16)
    assert m.lm_head.weight.dtype == torch.bfloat16 and m.inv_freq.dtype == torch.float32
    assert m(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        M.Transformer.from_pretrained(tmp_path / "nope")


def test_unknown_architecture_is_a_clear_error(tiny_models, tmp_path):
    cfg = json.loads((tiny_models["qwen2"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ValueError, match="MambaForCausalLM.*not supported"):
        M.Transformer.from_pretrained(tmp_path)


def test_corrupt_weights_are_a_clear_error(tiny_models, tmp_path):
    src = tiny_models["qwen2"]
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors: cannot read the weights"):
        M.Transformer.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        M.Transformer.from_pretrained(tmp_path)


def test_checkpoint_not_matching_config_is_a_clear_error(tiny_models, tmp_path):
    cfg = json.loads((tiny_models["qwen2"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    (tmp_path / "model.safetensors").write_bytes((tiny_models["qwen2"] / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match its config.json: missing"):
        M.Transformer.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t[:, :-1].contiguous(), r"model.safetensors: model.layers.1.mlp.up_proj.weight is F32 \(128, 63\), its "
                                       r"config.json needs a float tensor of shape \(128, 64\)"),
    (lambda t: t.to(torch.int32), r"up_proj.weight is I32 \(128, 64\), its config.json needs a float tensor"),
])
def test_a_tensor_of_the_wrong_shape_or_dtype_is_named_before_anything_is_read(tiny_models, tmp_path, change,
                                                                                 message):
    """A hand-edited or mismatched shard: the file, the tensor, what it is and what the config needs."""
    from safetensors.torch import load_file, save_file
    src = tiny_models["qwen2"]
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    key = "model.layers.1.mlp.up_proj.weight"
    state[key] = change(state[key])
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        M.Transformer.from_pretrained(tmp_path)


def test_corrupt_config_names_the_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n "vocab_size": 10,\n oops\n}')
    with pytest.raises(ValueError, match="config.json:3: not valid JSON"):
        M.Transformer.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    (dict(dtype=torch.float32), "FlashAttention only support fp16 and bf16 data type"),
    (dict(k_dtype=torch.float16), "query and key must have the same dtype"),
    (dict(cu_dtype=torch.int64), "cu_seqlens_q must have dtype int32"),
    (dict(head_dim=264), "FlashAttention forward only supports head dimension at most 256"),
    (dict(kv_heads=3), "Number of heads in key/value must divide number of heads in query"),
])
def test_flash_standin_rejects_what_the_kernel_rejects(change, message):
    """The stand-in enforces flash-attn 2.8.x's checks (csrc/flash_attn/flash_api.cpp), with its messages."""
    dtype, d, hk = change.get("dtype", torch.bfloat16), change.get("head_dim", 64), change.get("kv_heads", 2)
    q = torch.zeros(10, 4, d, dtype=dtype)
    k = torch.zeros(10, hk, d, dtype=change.get("k_dtype", dtype))
    cu = torch.tensor([0, 4, 10], dtype=change.get("cu_dtype", torch.int32))
    with pytest.raises(RuntimeError, match=message):
        flash_standin.flash_attn_varlen_func(q, k, k.clone(), cu, cu, 6, 6, causal=True)


def test_flash_standin_rejects_bad_kvcache_inputs():
    q, cache = torch.zeros(2, 1, 4, 64, dtype=torch.bfloat16), torch.zeros(3, 512, 2, 64, dtype=torch.bfloat16)
    ok = dict(cache_seqlens=torch.tensor([3, 5], dtype=torch.int32), causal=True)
    flash_standin.flash_attn_with_kvcache(q, cache, cache.clone(), **ok)
    for bad, message in [(dict(cache_seqlens=torch.tensor([3, 5])), "seqlens_k must have dtype int32"),
                         (dict(cache_batch_idx=torch.tensor([0, 2])), "cache_batch_idx must have dtype int32"),
                         (dict(block_table=torch.tensor([[0], [1]])), "block_table must have dtype torch.int32")]:
        with pytest.raises(RuntimeError, match=message):
            flash_standin.flash_attn_with_kvcache(q, cache, cache.clone(), **{**ok, **bad})
    pages = torch.zeros(3, 128, 2, 64, dtype=torch.bfloat16)  # 128-token pages: the kernel wants multiples of 256
    with pytest.raises(RuntimeError, match="Paged KV cache block size must be divisible by 256"):
        flash_standin.flash_attn_with_kvcache(q, pages, pages.clone(), block_table=torch.tensor(
            [[0], [1]], dtype=torch.int32), **ok)
    with pytest.raises(RuntimeError, match="FlashAttention only support fp16 and bf16"):
        flash_standin.flash_attn_with_kvcache(q.float(), cache.float(), cache.float(), **ok)


def test_flash_standin_checks_shapes_and_contiguity_and_accepts_what_the_wrappers_fix():
    """flash_api.cpp's CHECK_SHAPE / CHECK_CONTIGUOUS and the kvcache seqlen rule; and what the Python wrappers make
    right before the kernels see it (a non-contiguous last dimension, an int cache_seqlens)."""
    bf = dict(dtype=torch.bfloat16)
    q, cache = torch.zeros(2, 1, 4, 64, **bf), torch.zeros(3, 512, 2, 64, **bf)
    i32 = lambda x: torch.tensor(x, dtype=torch.int32)
    seqlens = i32([3, 5])
    kv = lambda **kw: flash_standin.flash_attn_with_kvcache(**{"q": q, "k_cache": cache, "v_cache": cache.clone(),
                                                              "cache_seqlens": seqlens, "causal": True, **kw})
    strided_q = torch.zeros(2, 1, 64, 4, **bf).transpose(2, 3)  # last dimension not contiguous
    kv(q=strided_q)
    kv(cache_seqlens=4, k_cache=torch.zeros(2, 512, 2, 64, **bf), v_cache=torch.zeros(2, 512, 2, 64, **bf))
    new_k = torch.zeros(2, 1, 2, 64, **bf)
    kv(k=new_k, v=new_k.clone())
    table = torch.tensor([[0], [2]], dtype=torch.int32)
    pages = torch.zeros(3, 256, 2, 64, **bf)
    kv(k_cache=pages, v_cache=pages.clone(), block_table=table, k=new_k, v=new_k.clone())
    for bad, message in [
            (dict(cache_seqlens=i32([3, 5, 1])), r"seqlens_k must have shape \(batch_size\)"),
            (dict(cache_seqlens=i32([3, 0, 5, 0])[::2]), "seqlens_k must be contiguous"),
            (dict(v_cache=torch.zeros(3, 512, 4, 64, **bf)), r"vcache must have shape \(batch_size_c, seqlen_k"),
            (dict(k=torch.zeros(2, 1, 4, 64, **bf), v=torch.zeros(2, 1, 4, 64, **bf)), r"k must have shape \(batch"),
            (dict(q=torch.zeros(2, 600, 4, 64, **bf), k=torch.zeros(2, 600, 2, 64, **bf),
                  v=torch.zeros(2, 600, 2, 64, **bf)), "it must have seqlen <= the seqlen of the KV cache"),
            (dict(k_cache=pages, v_cache=pages.clone(), block_table=table[:1]),
             r"block_table must have shape \(batch_size, max_num_blocks_per_seq\)")]:
        with pytest.raises(RuntimeError, match=message):
            kv(**bad)
    qv, kvv = torch.zeros(10, 4, 64, **bf), torch.zeros(10, 2, 64, **bf)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    varlen = lambda **kw: flash_standin.flash_attn_varlen_func(**{
        "q": qv, "k": kvv, "v": kvv.clone(), "cu_seqlens_q": cu, "cu_seqlens_k": cu, "max_seqlen_q": 6,
        "max_seqlen_k": 6, "causal": True, **kw})
    varlen(q=torch.zeros(10, 64, 4, **bf).transpose(1, 2))
    for bad, message in [
            (dict(cu_seqlens_q=i32([0, 9, 4, 9, 10, 9])[::2]), "cu_seqlens_q must be contiguous"),
            (dict(cu_seqlens_k=i32([0, 10])), r"cu_seqlens_k must have shape \(batch_size \+ 1\)"),
            (dict(v=torch.zeros(10, 4, 64, **bf)), r"v must have shape \(total_k, num_heads_k, head_size\)")]:
        with pytest.raises(RuntimeError, match=message):
            varlen(**bad)


def test_every_script_can_say_which_attention_runs(monkeypatch):
    assert M.attention_summary("cpu", torch.float32) == "attention: torch SDPA, fp32"
    assert M.attention_summary("cuda", torch.bfloat16) == \
        "attention: torch SDPA (flash-attn is not installed: make gpu-install), bf16"
    monkeypatch.setattr(M, "flash_attn", types.SimpleNamespace(__version__="2.8.3"))
    assert M.attention_summary("cuda:3", torch.bfloat16) == "attention: flash-attn 2.8.3 varlen, bf16"
    assert M.attention_summary("cuda", torch.float32) == \
        "attention: torch SDPA (flash-attn takes fp16 and bf16 only), fp32"


def test_the_automatic_choice_takes_flash_attn_only_where_its_kernels_run(tiny_models, monkeypatch):
    """flash-attn's kernels refuse fp32: a float32 model on CUDA attends with SDPA, whatever is installed; the
    choice is made from the compute dtype (the embedding's output, bf16 under FSDP2's mixed precision)."""
    import flash_standin
    monkeypatch.setattr(M, "flash_attn", flash_standin)
    m = M.Transformer.from_pretrained(tiny_models["qwen2"])
    assert m.uses_flash("cuda", torch.bfloat16) and m.uses_flash("cuda:1", torch.float16)
    assert not m.uses_flash("cuda", torch.float32) and not m.uses_flash("cpu", torch.bfloat16)
    monkeypatch.setattr(M, "flash_attn", None)
    assert not m.uses_flash("cuda", torch.bfloat16)
    m.attn_backend = "flash"  # forced: the stand-in's dtype check is what a real kernel would say
    monkeypatch.setattr(M, "flash_attn", flash_standin)
    with pytest.raises(RuntimeError, match="FlashAttention only support fp16 and bf16 data type"):
        m(torch.tensor([[1, 2, 3]]))


def test_sdpa_fallback_never_builds_the_score_matrix():
    """Packed documents attend through 4-D inputs with is_causal, so torch picks a fused kernel: the peak memory
    of one attention call over an 8k-token document, measured by MemTracker, stays far below the size of one
    (seq x seq) fp32 score matrix (the 3-D inputs of before took the math kernel: 8 of them, one per head)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    T, H, Hkv, D = 8192, 8, 2, 64
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(T, h, D, generator=g) for h in (H, Hkv, Hkv))
    pos = torch.cat([torch.arange(T - 100), torch.arange(100)])[None]  # two documents packed in one row
    info = M.attn_info(pos, None, None, flash=False, dtype=torch.float32)
    assert info.doc_lengths == [T - 100, 100]
    tracker = MemTracker()
    with tracker:
        out = M.attention(q, k, v, info, 0)
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert out.shape == (T, H * D) and peak < 0.25 * T * T * 4


def test_the_lm_head_gradient_is_summed_over_the_loss_chunks_in_fp32():
    """Under FSDP2's mixed precision the unsharded lm_head weight is bf16; its gradient is the sum of one term per
    loss chunk (16 for a 16k-token row). Summed in fp32 and rounded once it is the fp32 gradient to bf16 precision;
    summed in bf16, as autograd does for chunks computed apart, it is not."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(512, 64, generator=g), torch.randn(256, 64, generator=g) * 0.1
    targets, scale = torch.randint(0, 256, (512,), generator=g), torch.full((512,), 1 / 512)

    def grad_w(rows, dtype, chunk):
        weight = w.to(dtype, copy=True).requires_grad_()
        M.ChunkedCrossEntropy.apply(h[rows].to(dtype), weight, targets[rows], scale[rows], chunk).backward()
        return weight.grad

    exact = grad_w(slice(None), torch.float32, 512)
    ours = grad_w(slice(None), torch.bfloat16, 8)  # 64 chunks
    naive = sum(grad_w(slice(i, i + 8), torch.bfloat16, 8) for i in range(0, 512, 8))  # added up in bf16
    error = lambda x: ((x.float() - exact).abs().max() / exact.abs().max()).item()
    assert ours.dtype == naive.dtype == torch.bfloat16
    assert error(ours) < 2**-7  # bf16 inputs and one rounding of the sum
    assert error(naive) > 1.5 * error(ours), (error(naive), error(ours))
