"""model.py against transformers on tiny random checkpoints: logits, packing, KV cache, save/load, errors."""
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


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_kv_cache_decoding_gives_full_forward_logits(tiny_models, family):
    m = M.Transformer.from_pretrained(tiny_models[family])
    seq = torch.randint(0, m.config.vocab_size, (40,), generator=torch.Generator().manual_seed(2))
    full = m.lm_head(m(seq[None]))[0]
    cache, slot, n_prompt = M.KVCache(m.config, 3, 64, torch.float32, "cpu"), 2, 10
    h = m(seq[None, :n_prompt], torch.arange(n_prompt)[None], cache, torch.full((1, n_prompt), slot))
    steps = [m.lm_head(h[0, -1])]
    for t in range(n_prompt, len(seq)):
        h = m(seq[None, t:t + 1], torch.tensor([[t]]), cache, torch.tensor([[slot]]))
        steps.append(m.lm_head(h[0, 0]))
    assert (torch.stack(steps) - full[n_prompt - 1:]).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_flash_call_sites_match_sdpa(tiny_models, family, monkeypatch):
    """The flash-attn branches (varlen for packed rows, with_kvcache for decoding) through a pure-torch
    stand-in with flash-attn's signatures agree with the SDPA path."""
    monkeypatch.setattr(M, "flash_attn", types.SimpleNamespace(
        flash_attn_varlen_func=flash_standin.flash_attn_varlen_func,
        flash_attn_with_kvcache=flash_standin.flash_attn_with_kvcache))
    m = M.Transformer.from_pretrained(tiny_models[family])
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, m.config.vocab_size, (2, 24), generator=g)
    pos = torch.tensor([list(range(10)) + list(range(14)), list(range(24))])
    results = {}
    for backend in ("sdpa", "flash"):
        m.attn_backend = backend
        cache = M.KVCache(m.config, 3, 32, torch.float32, "cpu")
        packed = m(ids, pos, cache, torch.tensor([[0] * 10 + [2] * 14, [1] * 24]))  # three prompts, three slots
        step = m(torch.tensor([[5], [6], [7]]), torch.tensor([[10], [24], [14]]), cache, torch.tensor([[0], [1], [2]]))
        results[backend] = (packed, step, cache.k.clone())
    for a, b in zip(results["sdpa"], results["flash"]):
        assert (a - b).abs().max().item() < 1e-5


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


def test_corrupt_config_names_the_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n "vocab_size": 10,\n oops\n}')
    with pytest.raises(ValueError, match="config.json: line 3"):
        M.Transformer.from_pretrained(tmp_path)
