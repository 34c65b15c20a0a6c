"""sample.py: greedy parity with transformers' generate, sampling, continuous batching, the resumable CLI."""
import json
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM

import checkpoint
import model as M
import prompts as P
import sample

PROBLEMS = ["What is 2+2?", "Compute the sum of all primes below 20, then double it.", "x", "Solve 3x = 12."]


@pytest.fixture(scope="module")
def qwen2(tiny_models):
    path = tiny_models["qwen2"]
    return M.Transformer.from_pretrained(path), checkpoint.load_tokenizer(path), path


def test_prompt_is_r1_format_with_a_single_bos(qwen2):
    _, tok, _ = qwen2
    ids = P.prompt_ids(tok, "What is 2+2?")
    text = tok.decode(ids)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert text.endswith("<｜Assistant｜><think>\n") and P.INSTRUCTION in text
    full, n_prompt = P.example_ids(tok, "What is 2+2?", "<think>\nfour</think>\n\n\\boxed{4}")
    assert full[:n_prompt] == ids and full[-1] == tok.eos_token_id
    assert tok.decode(full[n_prompt:-1]) == "four</think>\n\n\\boxed{4}"


def test_skythought_prompts_are_the_user_turn_as_the_paper_rendered_it(qwen2):
    """--protocol tldr-paper: SkyThought's task template is the whole user turn, no system prompt, the chat
    template as it is (here it ends with "<think>\n" itself); the R1 instruction is not added."""
    import evaluate
    _, tok, _ = qwen2
    math = P.prompt_text(tok, "What is 2+2?", evaluate.prompt_template("tldr-paper", "math500"))
    assert math == "<｜begin▁of▁sentence｜><｜User｜>Return your final response within \\boxed{}. What is 2+2?" \
                   "<｜Assistant｜><think>\n"
    gsm8k = P.prompt_text(tok, "Tom has {3} apples.", evaluate.prompt_template("tldr-paper", "gsm8k"))
    assert gsm8k == ("<｜begin▁of▁sentence｜><｜User｜>Given the following problem, reason and give a final answer to "
                     "the problem.\nProblem: Tom has {3} apples.\nYour response should end with \"The final answer is "
                     "[answer]\" where [answer] is the response to the problem.<｜Assistant｜><think>\n")
    assert evaluate.prompt_template("tldr-paper", "my_set") == evaluate.BOXED
    assert evaluate.prompt_template("deepseek", "math500") is None  # the R1 prompt, as in training
    # the chat template as it is: one without "<think>" in its generation prompt gets none added
    bare = tok.chat_template
    tok.chat_template = bare.replace("<｜Assistant｜><think>\n{% endif %}", "<｜Assistant｜>{% endif %}")
    try:
        assert P.prompt_text(tok, "x", evaluate.BOXED).endswith("x<｜Assistant｜>")
        assert P.prompt_text(tok, "x").endswith("<｜Assistant｜><think>\n")
    finally:
        tok.chat_template = bare


def test_prompt_instruction_from_the_tokenizer_config(tmp_path):
    """A tokenizer_config.json "prompt_instruction" replaces the R1 sentence ("" = none) and survives a save."""
    import tiny
    tok = tiny.make_tokenizer(None)
    tok.init_kwargs["prompt_instruction"] = ""
    tok.save_pretrained(tmp_path)
    tok = checkpoint.load_tokenizer(tmp_path)
    assert P.prompt_text(tok, "What is 2+2?") == "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    tok.init_kwargs["prompt_instruction"] = "Answer in a box."
    assert "What is 2+2?\nAnswer in a box.<｜Assistant｜>" in P.prompt_text(tok, "What is 2+2?")
    assert P.prompt_text(tok, "What is 2+2?\nAnswer in a box.").count("Answer in a box.") == 1


@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3"])
@torch.no_grad()
def test_greedy_batch_equals_transformers_generate(tiny_models, family):
    path = tiny_models[family]
    ours, tok = M.Transformer.from_pretrained(path), checkpoint.load_tokenizer(path)
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS]
    free = sample.generate(ours, prompts, max_new_tokens=40)
    stop = free[0][0].tokens[6]  # a token the model really emits: rows stop at different steps, or run to the limit
    outs = sample.generate(ours, prompts, max_new_tokens=40, stop_ids=[stop], batch_size=3)
    lengths = {len(o[0].tokens) for o in outs}
    assert len(lengths) > 1 and outs[0][0].finish == "stop" and outs[0][0].tokens[-1] == stop

    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    gen = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=40, do_sample=False,
                       eos_token_id=[stop], pad_token_id=tok.pad_token_id)[:, width:].tolist()
    for o, g in zip(outs, gen):
        want = g[:g.index(stop) + 1] if stop in g else g
        assert o[0].tokens == want


@torch.no_grad()
def test_sampling_is_reproducible_and_batch_independent(qwen2):
    m, tok, _ = qwen2
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS]
    kw = dict(max_new_tokens=25, temperature=0.8, top_p=0.9, top_k=50, n=3)
    a = sample.generate(m, prompts, seed=7, batch_size=2, **kw)
    b = sample.generate(m, prompts, seed=7, batch_size=12, **kw)
    c = sample.generate(m, prompts, seed=8, batch_size=12, **kw)
    tokens = lambda outs: [[s.tokens for s in row] for row in outs]
    assert tokens(a) == tokens(b) != tokens(c)
    assert len({tuple(s) for s in tokens(a)[0]}) == 3  # the n samples of one prompt differ
    greedy = sample.generate(m, prompts, max_new_tokens=25)
    top1 = sample.generate(m, prompts, max_new_tokens=25, temperature=1.0, top_k=1)
    assert tokens(greedy) == tokens(top1)


def test_sample_tokens_follows_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]]).repeat(20000, 1)
    u = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(sample.sample_tokens(logits, 0.5, 1.0, 0, u), minlength=5).double() / 20000
    want = torch.softmax(logits[0] / 0.5, -1).double()
    assert (counts - want).abs().max() < 0.01
    # top_p keeps the smallest set of most likely tokens whose mass reaches top_p
    nucleus = sample.sample_tokens(logits, 1.0, 0.7, 0, u)
    probs = torch.softmax(logits[0], -1)
    order = probs.argsort(descending=True).tolist()
    keep = order[:next(i for i in range(5) if probs[order[:i + 1]].sum() >= 0.7) + 1]
    assert set(nucleus.tolist()) == set(keep)
    assert set(sample.sample_tokens(logits, 1.0, 1.0, 2, u).tolist()) == set(order[:2])


@torch.no_grad()
def test_continuous_batching_refills_slots(qwen2):
    """More sequences than slots, limits reached at different steps: every sequence is completed and
    equals its own single-sequence generation."""
    m, tok, _ = qwen2
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS * 3]
    stop = sample.generate(m, prompts[:1], max_new_tokens=30)[0][0].tokens[3]
    finished = []
    outs = sample.generate(m, prompts, max_new_tokens=30, stop_ids=[stop], batch_size=2, max_prefill_tokens=100,
                           on_finish=lambda i, j, c: finished.append(i))
    assert sorted(finished) == list(range(len(prompts)))
    for p, o in zip(prompts, outs):
        assert o[0].tokens == sample.generate(m, [p], max_new_tokens=30, stop_ids=[stop])[0][0].tokens


def test_prompt_longer_than_context_is_an_error(qwen2):
    m, _, _ = qwen2
    with pytest.raises(ValueError, match="prompt 1 has 2000 tokens"):
        sample.generate(m, [[1, 2], [3] * 2000], max_new_tokens=5)


def test_tokens_never_run_past_the_context(qwen2):
    m, _, _ = qwen2
    out = sample.generate(m, [[5] * 1020], max_new_tokens=50)[0][0]
    assert len(out.tokens) == 1024 - 1020 and out.finish == "length"


def run_cli(*args):
    try:
        P.main(sample.generate, [str(a) for a in args])
    except SystemExit as e:
        return str(e.code)
    return None


def test_cli_appends_and_resumes(qwen2, tmp_path, capsys):
    _, _, path = qwen2
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "problem": p, "answer": "4"}) + "\n"
                               for i, p in enumerate(PROBLEMS))
                       + json.dumps({"id": "long", "problem": "y" * 1100}) + "\n")
    out = tmp_path / "out.jsonl"
    common = ["--model", path, "--prompts", prompts, "--out", out, "--samples", 2, "--max_new_tokens", 8,
              "--temperature", 0.7]
    assert run_cli(*common) is None
    first = out.read_text().splitlines()
    assert len(first) == 8 and "skipped 1 prompt(s) longer than the context" in capsys.readouterr().err
    row = json.loads(first[0])
    assert {"id", "problem", "answer", "sample", "response", "tokens", "finish"} <= set(row)
    # an interrupted run: three complete lines and a torn one; the rerun completes exactly the rest
    out.write_text("\n".join(first[:3]) + "\n" + first[3][:20])
    assert run_cli(*common) is None
    again = out.read_text().splitlines()
    assert len(again) == 8 and again[:3] == first[:3]
    assert sorted(again) == sorted(first)  # the same seed gives the same completions whatever the batch


def test_a_torn_part_file_is_cut_before_the_rerun_appends(qwen2, tmp_path):
    """A killed run leaves its completions in its part file, the last line torn: the rerun cuts that line before
    appending to the same file (else the next completion would be glued to it), and the merged output is whole."""
    _, _, path = qwen2
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "problem": p}) + "\n" for i, p in enumerate(PROBLEMS)))
    out = tmp_path / "out.jsonl"
    common = ["--model", path, "--prompts", prompts, "--out", out, "--samples", 2, "--max_new_tokens", 8,
              "--temperature", 0.7]
    assert run_cli(*common) is None
    first = out.read_text().splitlines()
    out.unlink()  # as if killed before the merge: only the part file (and the stamp) are there
    (tmp_path / "out.jsonl.part-00000-of-00001").write_text("\n".join(first[:3]) + "\n" + first[3][:20])
    assert run_cli(*common) is None
    assert sorted(out.read_text().splitlines()) == sorted(first)


def test_cli_names_the_bad_line(qwen2, tmp_path):
    _, _, path = qwen2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "problem": "ok"}\n{"id": 2, "problem": \n')
    assert "bad.jsonl:2: not valid JSON" in run_cli("--model", path, "--prompts", bad, "--out", tmp_path / "o.jsonl")
    bad.write_text('{"id": 1, "problem": "ok"}\n\n{"id": 2, "question": "?"}\n')
    assert "bad.jsonl:3: missing field(s) problem" in run_cli("--model", path, "--prompts", bad,
                                                              "--out", tmp_path / "o.jsonl")


def test_cli_missing_model_is_a_clear_error(tmp_path):
    msg = run_cli("--model", tmp_path / "nothing", "--prompt", "hi")
    assert msg.startswith("error:") and "nothing" in msg


def test_cli_single_prompt(qwen2, capsys):
    _, _, path = qwen2
    assert run_cli("--model", path, "--prompt", "What is 2+2?", "--max_new_tokens", 5, "--samples", 2) is None
    assert capsys.readouterr().out.count("--- sample") == 2


def test_a_char_level_tokenizer_in_a_model_directory_loads_as_saved(tmp_path):
    """transformers' AutoTokenizer would pick Qwen2Tokenizer from config.json and change the encoding."""
    import tiny
    tok = tiny.make_tokenizer("0123456789+-=? Whatis\n")
    tok.save_pretrained(tmp_path / "tok")
    tiny.make_model(tmp_path / "model", "qwen2", tokenizer=tok, hidden=32, layers=1)
    a, b = checkpoint.load_tokenizer(tmp_path / "tok"), checkpoint.load_tokenizer(tmp_path / "model")
    assert len(a) == len(b) == len(tok)
    assert P.prompt_ids(a, "What is 7-3?") == P.prompt_ids(b, "What is 7-3?")


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@torch.no_grad()
def test_preemption_when_pages_run_out_keeps_every_output(qwen2, temperature):
    """A KV cache too small for every sequence at once: the engine preempts the youngest sequences and recomputes
    them later, and every completion equals the one an unconstrained run makes."""
    m, tok, _ = qwen2
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS * 3]
    kw = dict(max_new_tokens=60, temperature=temperature, n=2, seed=3, page_size=8)
    free = sample.generate(m, prompts, batch_size=24, **kw)
    page = M.KVCache.page_bytes(m.config, 8, torch.float32)
    stats = {}
    tight = sample.generate(m, prompts, batch_size=24, kv_memory=30 * page, stats=stats, **kw)
    assert stats["preemptions"] > 0 and stats["peak_pages"] <= 29
    assert [[c.tokens for c in o] for o in tight] == [[c.tokens for c in o] for o in free]
    assert [[c.finish for c in o] for o in tight] == [[c.finish for c in o] for o in free]


def test_a_cache_too_small_for_one_sequence_is_a_clear_error(qwen2):
    m, tok, _ = qwen2
    page = M.KVCache.page_bytes(m.config, 16, torch.float32)
    with pytest.raises(ValueError, match="the longest sequence needs"):
        sample.generate(m, [P.prompt_ids(tok, "What is 2+2?")], max_new_tokens=200, kv_memory=3 * page)


def test_paged_engine_needs_far_less_memory_than_slots_on_long_tailed_lengths(qwen2):
    """Most answers short, a few at the limit: the pages in use at the peak against what slots of the longest
    length reserve (the slot engine's cache), with identical outputs."""
    import bench
    m, tok, _ = qwen2
    prompts = [P.prompt_ids(tok, f"{p} ({i})") for i in range(4) for p in PROBLEMS]
    stop = bench.long_tailed_stop([o[0].tokens for o in sample.generate(m, prompts, max_new_tokens=200)], 200)
    paged, slots = {}, {}
    a = sample.generate(m, prompts, max_new_tokens=200, stop_ids=[stop], batch_size=16, page_size=16, stats=paged)
    longest = max(len(p) for p in prompts) + 200
    b = sample.generate(m, prompts, max_new_tokens=200, stop_ids=[stop], batch_size=16, page_size=longest,
                        stats=slots)  # one page of the longest length per sequence: the slot engine
    assert [o[0].tokens for o in a] == [o[0].tokens for o in b]
    assert paged["peak_pages"] * paged["page_bytes"] < 0.5 * slots["pages"] * slots["page_bytes"]


def test_uniforms_are_a_pure_function_of_key_and_step():
    keys = torch.tensor([sample.sequence_key(0, [1, 2, 3], j) for j in range(4)] * 2500)
    steps = torch.arange(10_000)
    u = sample.uniforms(keys, steps)
    assert u.dtype == torch.float64 and (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert torch.equal(u[17:19], sample.uniforms(keys[17:19], steps[17:19]))  # whatever else is in the batch
    assert sample.sequence_key(0, [1, 2, 3], 0) != sample.sequence_key(1, [1, 2, 3], 0)


def test_sampling_sorts_the_vocabulary_only_for_top_p():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    u = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    calls = []
    real = torch.Tensor.sort
    torch.Tensor.sort = lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    try:
        sample.sample_tokens(logits, 0.7, 1.0, 0, u)
        sample.sample_tokens(logits, 0.7, 1.0, 5, u)
        assert not calls
        sample.sample_tokens(logits, 0.7, 0.9, 0, u)
        assert calls
    finally:
        torch.Tensor.sort = real


@torch.no_grad()
def test_decode_graphs_over_sdpa_read_every_gathered_key(qwen2, monkeypatch):
    """Graphs are made for flash-attn, but cuda_graphs=True over SDPA must still be right: the captured step has no
    longest row of its own, so it attends to the whole width of its block table (masked past each row's length)."""
    m, tok, _ = qwen2
    monkeypatch.setattr(sample, "capture", lambda fn, pool: (fn, pool))
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS * 3]
    kw = dict(max_new_tokens=20, batch_size=12, page_size=16)
    eager = sample.generate(m, prompts, cuda_graphs=False, **kw)
    graphs = sample.generate(m, prompts, cuda_graphs=True, **kw)
    assert [o[0].tokens for o in graphs] == [o[0].tokens for o in eager]


@torch.no_grad()
def test_decode_graphs_pad_rows_into_buckets_and_change_nothing(qwen2, monkeypatch):
    """The CUDA-graph decode path on CPU: flash-attn's call sites through the stand-in, and each "graph" replayed
    eagerly (no CUDA here to record one), so the buckets, the static tensors and the padded rows writing into the
    scratch page are exercised. Every completion equals the eager engine's, at greedy and at temperature 0.8."""
    import flash_standin
    m, tok, path = qwen2
    monkeypatch.setattr(M, "flash_attn", flash_standin)
    monkeypatch.setattr(sample, "capture", lambda fn, pool: (fn, pool))
    model = M.Transformer.from_pretrained(path, dtype=torch.bfloat16)
    model.attn_backend = "flash"
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS * 3]
    for temperature in (0.0, 0.8):
        kw = dict(max_new_tokens=20, temperature=temperature, batch_size=12, seed=1)
        eager = sample.generate(model, prompts, cuda_graphs=False, **kw)
        graphs = sample.generate(model, prompts, cuda_graphs=True, **kw)
        assert [o[0].tokens for o in graphs] == [o[0].tokens for o in eager]
    assert sample.decode_buckets(12) == [1, 2, 4, 8, 12] and sample.decode_buckets(40) == [1, 2, 4, 8, 16, 32, 40]
    # the graphs' block table is as wide as the engine's longest sequence, not the model's context: flash-attn
    # fixes its split-KV count from that width at capture (a 131k-token table would leave most SMs idle)
    longest = max(len(p) for p in prompts) + 20
    graphs = sample._engine.graphs
    assert graphs.block_table.shape[1] == -(-longest // 256) < -(-model.config.max_position_embeddings // 256)


class CachingAllocator:
    """torch's CUDA caching allocator as far as sizing a KV cache sees it (c10/cuda/CUDACachingAllocator.cpp,
    torch/cuda/memory.py): a freed tensor's blocks stay reserved by the process until empty_cache(); mem_get_info
    (the driver's cudaMemGetInfo) counts reserved memory as used; memory_allocated counts live tensors and
    max_memory_allocated their peak since reset_peak_memory_stats. Sizes are real CPU bytes: a GB of the modelled
    GPU is GB bytes, so that a tiny model's few MB of cache stand for tens of GB. A forward without a cache (the
    engine's sizing prefill) takes `activations` bytes while it runs and frees them after, still reserved."""
    GB = 2**16

    def __init__(self, total, activations=0):
        self.total, self.allocated, self.reserved, self.peak = total, 0, 0, 0
        self.activations = activations

    def free(self, n):
        self.allocated -= n  # (the blocks stay reserved)

    def take(self, n):
        self.allocated += n
        self.reserved, self.peak = max(self.reserved, self.allocated), max(self.peak, self.allocated)

    def tensor(self, t):
        n = t.numel() * t.element_size()
        self.take(n)
        weakref.finalize(t, lambda: setattr(self, "allocated", self.allocated - n))

    def install(self, monkeypatch):
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "mem_get_info", lambda device=None: (self.total - self.reserved, self.total))
        monkeypatch.setattr(cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(cuda, "memory_reserved", lambda device=None: self.reserved)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda device=None: setattr(self, "peak", self.allocated))
        monkeypatch.setattr(cuda, "empty_cache", lambda: setattr(self, "reserved", self.allocated))
        monkeypatch.setattr(cuda, "synchronize", lambda device=None: None)
        forward = M.Transformer.forward

        def prefill(model, input_ids, *args, **kwargs):
            if args or kwargs:  # (with a cache: the engine's own steps)
                return forward(model, input_ids, *args, **kwargs)
            self.take(self.activations)
            try:
                return forward(model, input_ids)
            finally:
                self.free(self.activations)
        monkeypatch.setattr(M.Transformer, "forward", prefill)
        init = M.KVCache.__init__

        def kv_cache(cache, *args, **kwargs):
            init(cache, *args, **kwargs)
            for t in cache.k + cache.v:
                self.tensor(t)
        monkeypatch.setattr(M.KVCache, "__init__", kv_cache)


class OnGpu(torch.nn.Parameter):
    """A CPU weight that says it is on CUDA: the engine then sizes its cache as on a GPU."""
    is_cuda = property(lambda self: True)


def test_two_benchmarks_and_two_models_in_one_process_under_the_caching_allocator(tiny_models, monkeypatch):
    """evaluate.py's benchmarks one after another, then data/build.py bounds' second model, on a modelled 80 GB GPU.
    Sizing each call's cache from the memory free now fails on the second call: the first cache went back to
    torch's allocator, not to the driver. One engine per model (reused), released before the next model's is sized
    with the allocator emptied, works. The cache leaves room for the sizing prefill's activations (5 GB), measured
    with the allocator emptied before (the loading's freed temporaries, 3 GB: release_engine's empty_cache or
    gpu_kv_bytes' first) and after (the activations themselves: its second): without them, or without the
    activations term, it comes out 3-5 GB off."""
    gib = CachingAllocator.GB
    gpu = CachingAllocator(80 * gib, activations=5 * gib)
    gpu.install(monkeypatch)
    tok = checkpoint.load_tokenizer(tiny_models["qwen2"])
    prompts = [[P.prompt_ids(tok, p) for p in PROBLEMS], [P.prompt_ids(tok, p + " Twice.") for p in PROBLEMS]]

    def load(family):
        m = M.Transformer.from_pretrained(tiny_models[family])
        m.lm_head.weight = OnGpu(m.lm_head.weight.data, requires_grad=False)
        gpu.take(15 * gib)  # its weights
        gpu.take(3 * gib)  # and a temporary of the loading, freed: still reserved
        gpu.free(3 * gib)
        return m

    a = load("qwen2")
    kw = dict(max_new_tokens=8, batch_size=4, page_size=256)  # a GPU's pages
    first = sample.generate(a, prompts[0], **kw)
    engine, cache_bytes = sample._engine, gpu.allocated - 15 * gib
    room, page = 0.9 * 80 * gib - 15 * gib - 5 * gib, M.KVCache.page_bytes(a.config, 256, torch.float32)
    assert room - page < cache_bytes <= room  # 90% of the GPU, less what is used and the prefill's activations
    second = sample.generate(a, prompts[1], **kw)  # the next benchmark: the same engine, nothing allocated
    assert sample._engine is engine and gpu.allocated == 15 * gib + cache_bytes and len(second) == len(PROBLEMS)
    assert [o[0].tokens for o in sample.generate(a, prompts[0], **kw)] == [o[0].tokens for o in first]
    del engine  # (the test's own reference to it)
    b = load("llama")  # bounds: the long model after the short one
    sample.generate(b, prompts[0], **kw)
    assert sample._engine.model is b and gpu.allocated <= 0.9 * gpu.total
    sample.release_engine()
    assert sample._engine is None and gpu.reserved == gpu.allocated == 30 * gib  # the weights alone


on_cpu_build = pytest.mark.skipif(torch.cuda.is_available(), reason="runs a CPU model as on CUDA (bench.HostCalls "
                                                                   "fakes the device copies of a CPU build)")


def engine_as_on_cuda(m, tok, page_size, max_len=64):
    """An engine of 4 sampled sequences whose host-to-device copies are made as on a GPU: its device says cuda,
    and bench.HostCalls (the OpCounter's) keeps the copies on the host, counting the pageable ones."""
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS]
    engine = sample.Engine(m, 9, page_size, 4, 8192, max_len, False)
    engine.start([sample.Sequence(i, p, 20, sample.sequence_key(0, p, 0)) for i, p in enumerate(prompts)],
                 (0.7, 0.95, 0), set())
    engine.device = torch.device("cuda")
    return engine


@on_cpu_build
def test_a_decode_step_makes_one_host_sync_counted_as_on_cuda(qwen2):
    """The step's integer tensors reach the device through pinned memory without waiting (Engine.to_device), top-p
    masks with masked_fill_, and the step's one read is the sampled tokens; counted by CUDA's rules
    (bench.OpCounter), which the counter itself is checked against."""
    import bench
    m, tok, _ = qwen2
    engine = engine_as_on_cuda(m, tok, 64)
    for _ in range(4):  # the prefill, then decode steps
        with bench.OpCounter() as counter:
            engine.step()
        assert counter.syncs == 1
    with bench.OpCounter() as counter:  # what counts: a copy to the device from pageable memory or that waits, a
        torch.tensor([1, 2], device="cpu")  # boolean index, a read
        torch.tensor([1, 2]).to("cuda", non_blocking=True)
        torch.tensor([1, 2], pin_memory=True).to("cuda")
        torch.tensor([1, 2], pin_memory=True).to(torch.device("cuda"), non_blocking=True)  # (no sync)
        torch.tensor([1, 2]).to("cpu")  # (no copy)
        x = torch.rand(3, 4)
        x[x > 0.5]
        x[x > 0.5] = 0  # masked_fill_ underneath (canDispatchToMaskedFill): no sync
        x.masked_fill_(x > 0.2, 1.0)
        x.sum().item()
    assert counter.syncs == 5


@on_cpu_build
def test_a_step_through_flash_attn_makes_one_host_sync_as_the_real_kernels(tiny_models, monkeypatch):
    """With flash-attn (its stand-in, which like the real kernels never reads cache_seqlens or cu_seqlens back to the
    host), a prefill and each decode step read the device once: the sampled tokens. This is the step a GPU captures
    as a CUDA graph, where a host read could not be."""
    import bench
    import flash_standin
    monkeypatch.setattr(M, "flash_attn", flash_standin)
    m = M.Transformer.from_pretrained(tiny_models["qwen2"], dtype=torch.bfloat16)
    m.attn_backend = "flash"
    engine = engine_as_on_cuda(m, checkpoint.load_tokenizer(tiny_models["qwen2"]), 256, max_len=512)
    for _ in range(3):
        with bench.OpCounter() as counter:
            engine.step()
        assert counter.syncs == 1


@pytest.mark.parametrize("page_size,kernels", [(64, 19), (512, 17)])
def test_a_decode_layer_launches_17_kernels_counted_as_on_cuda(qwen2, page_size, kernels):
    """One matrix product for q, k and v and one for gate and up, rms_norm as aten's one fused CUDA kernel, q and k
    rotated together: 17 kernels in a decode step's layer (it was 36) when each sequence holds one page and the
    SDPA decode reads the cache in place, two more (the keys and values gathered) when sequences span pages;
    counted by bench.layer_ops, whose counter takes rms_norm for the one kernel it is on CUDA and its
    decomposition on this CPU for six."""
    import bench
    m, tok, _ = qwen2
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS]
    engine = sample.Engine(m, 9, page_size, 4, 8192, 512, False)
    engine.start([sample.Sequence(i, p, 20, sample.sequence_key(0, p, 0)) for i, p in enumerate(prompts)],
                 (0.7, 0.95, 0), set())
    engine.step()  # the prefill
    assert bench.layer_ops(m.model.layers[0], engine.step)[1] == kernels
    x, w = torch.rand(3, 8), torch.rand(8)
    with bench.OpCounter() as fused:
        torch.nn.functional.rms_norm(x, (8,), w, 1e-6)
    with bench.OpCounter() as eager:
        w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert (fused.kernels, eager.kernels) == (1, 6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_sdpa_calls_follow_cudas_rules_in_every_dtype(tiny_models, dtype):
    """Without flash-attn (not installed, or refused) a GPU runs model.py's SDPA calls: the decode step's mask, the
    packed prefill and the training rows, each checked against CUDA's rules (flash_standin.CudaSdpaRules: a mask
    of the query's dtype, 4-D inputs), in bf16 as on a GPU and in fp32."""
    import flash_standin
    m = M.Transformer.from_pretrained(tiny_models["qwen2"], dtype=dtype)
    tok = checkpoint.load_tokenizer(tiny_models["qwen2"])
    prompts = [P.prompt_ids(tok, p) for p in PROBLEMS]
    with flash_standin.CudaSdpaRules() as rules:
        for page_size in (16, None):  # rows spanning pages (gathered), and one page per row (a view)
            sample.generate(m, prompts, max_new_tokens=6, batch_size=4, page_size=page_size)
            sample.release_engine()
        m.train()(torch.tensor([prompts[0] + prompts[1]]), torch.tensor([list(range(len(prompts[0]))) +
                                                                         list(range(len(prompts[1])))]))
    assert rules.calls > 20  # (2 layers: the prefills, the decode steps and the training rows)
