"""
Benchmarks, each against its reference side by side in one process, on CPU-sized tiny models.

    python bench.py            # or: make bench

Each comparison ends with one line a script can read:
    bench <name>: ours <x> <unit>, reference <y> <unit>, ratio <r>x
and all numbers are also written to out/bench.json.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent / "data"))
import model as M  # noqa: E402
import sample  # noqa: E402
import tiny  # noqa: E402

RESULTS = {}


def report(name, ours, ref, unit, **extra):
    ratio = ours / ref
    RESULTS[name] = {"ours": ours, "reference": ref, "unit": unit, "ratio": ratio, **extra}
    print(f"bench {name}: ours {ours:.1f} {unit}, reference {ref:.1f} {unit}, ratio {ratio:.2f}x", flush=True)


def bench_generate(workdir: Path):
    """sample.generate against transformers' model.generate: the same model, prompts and greedy settings,
    batches of 32, outputs of varied length (a stop token chosen so rows end at widely different steps)."""
    from transformers import AutoModelForCausalLM
    path = tiny.make_model(workdir / "gen", "qwen2", hidden=256, layers=4, heads=8, kv_heads=2, intermediate=512,
                           init_std=0.3, seed=0)
    tok = sample.load_tokenizer(path)
    ours = M.Transformer.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # R1-like shape: short prompts, outputs from a few tokens to many times the mean
    problems = [f"{i * 37 % 101} * {i * 53 % 89} = ?" for i in range(128)]
    prompts = [sample.prompt_ids(tok, p) for p in problems]
    max_new, batch = 400, 32

    # pick a stop token that the model emits at widely varied steps (greedy tokens before it do not change)
    free = [o[0].tokens for o in sample.generate(ours, prompts, max_new_tokens=max_new, batch_size=batch)]
    def lengths(v):
        return torch.tensor([float(t.index(v) + 1 if v in t else max_new) for t in free])
    stop = max(set(sum(free, [])), key=lambda v: lengths(v).std() if lengths(v).mean() < 0.4 * max_new else 0)
    lens = lengths(stop)
    print(f"generation: {len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"batch {batch}, greedy, up to {max_new} new tokens; output lengths min {lens.min():.0f} "
          f"mean {lens.mean():.0f} max {lens.max():.0f}", flush=True)

    def run_ours():
        outs = sample.generate(ours, prompts, max_new_tokens=max_new, stop_ids=[stop], batch_size=batch)
        return [o[0].tokens for o in outs]

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
        return got

    timings = {}
    for name, fn in (("ours", run_ours), ("reference", run_ref)):
        fn()  # warm-up
        t0 = time.perf_counter()
        tokens = fn()
        timings[name] = (time.perf_counter() - t0, tokens)
    same = timings["ours"][1] == timings["reference"][1]
    n_tokens = sum(map(len, timings["ours"][1]))
    print(f"generation: identical greedy tokens: {same}; {n_tokens} tokens; ours {timings['ours'][0]:.2f} s, "
          f"transformers {timings['reference'][0]:.2f} s", flush=True)
    if not same:
        raise SystemExit("bench generate: sample.py and model.generate disagree on greedy tokens")
    report("generate", n_tokens / timings["ours"][0], n_tokens / timings["reference"][0], "tok/s",
           identical_tokens=same, tokens=n_tokens)


def train_side(side, path, examples, steps, global_batch, row_tokens, micro_batch):
    """One side of the training bench, in a process of its own so that its peak memory is its own."""
    import resource
    import train
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
                ids, pos, tgt = train.make_row([batch[i] for i in row], "cpu")
                (model(ids, pos, targets=tgt) / n_target).backward()
        else:  # Hugging Face Trainer: micro-batches of examples padded to the longest, mean loss per micro-batch
            for i in range(0, global_batch, micro_batch):
                chunk = batch[i:i + micro_batch]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in chunk])
                mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk])
                labels = torch.tensor([[-100] * n + ids[n:] + [-100] * (width - len(ids)) for ids, n in chunk])
                (model(input_ids=ids, attention_mask=mask, labels=labels).loss / (global_batch // micro_batch)).backward()
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
    tok = sample.load_tokenizer(path)
    rng = torch.Generator().manual_seed(0)
    # long-tailed response lengths, like CoT traces: most short, a few very long
    lengths = torch.distributions.LogNormal(4.5, 0.9).sample((256,)).clamp(10, 1500).long().tolist()
    examples = [sample.example_ids(tok, f"{i} + {i} = ?", "".join(chr(97 + int(c)) for c in
                                   torch.randint(0, 26, (n,), generator=rng))) for i, n in enumerate(lengths)]
    lens = torch.tensor([float(len(ids)) for ids, _ in examples])
    steps, global_batch, row_tokens, micro_batch = 6, 32, 2048, 8  # 8 sequences per micro-batch, as the official run
    print(f"training: {len(examples)} examples of {lens.min():.0f}-{lens.max():.0f} tokens (mean {lens.mean():.0f}), "
          f"{steps} steps of {global_batch} examples; ours: packed rows of {row_tokens} tokens; reference: "
          f"micro-batches of {micro_batch} padded examples", flush=True)
    ctx = multiprocessing.get_context("spawn")
    results = {}
    for side in ("ours", "reference"):
        with ctx.Pool(1) as pool:
            results[side] = pool.apply(train_side, (side, path, examples, steps, global_batch, row_tokens, micro_batch))
    (ours, ours_mem), (ref, ref_mem) = results["ours"], results["reference"]
    print(f"training: peak memory (max RSS) ours {ours_mem:.0f} MB, reference {ref_mem:.0f} MB", flush=True)
    report("train", ours, ref, "completion tok/s", peak_rss_mb={"ours": ours_mem, "reference": ref_mem})
    report("train_memory", ours_mem, ref_mem, "MB")


def main():
    torch.manual_seed(0)
    # tiny models: one thread avoids OpenMP synchronisation dominating, and keeps the ratio stable when the
    # other core is busy; both sides of every comparison run with the same setting
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        bench_generate(Path(d))
        bench_train(Path(d))
    Path("out").mkdir(exist_ok=True)
    Path("out/bench.json").write_text(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
