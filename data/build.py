"""
Build what TLDR trains on, with sample.py's engine and evaluate.py's grader: the System-1 and System-2
data sets and the bounds. Every stage samples into OUT.samples.jsonl first (appended as completions finish,
so a killed run resumes where it stopped), then writes OUT in one atomic step.

    # System-2: the long model answers each hard problem n times; the shortest correct answer is kept
    python data/build.py system2 --model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --problems data/bench/s1k.jsonl \
        --out data/r1_7b/system2.jsonl --samples 8 --temperature 0.7 --max_new_tokens 16000
    # System-1: the short model answers each easy problem once; correct answers are kept
    python data/build.py system1 --model Qwen/Qwen2.5-7B-Instruct --problems data/bench/gsm8k_train.jsonl \
        --out data/r1_7b/system1.jsonl --samples 1 --temperature 0.7 --max_new_tokens 4096
    # the dev set: the first 512 problems of AIME 1983-2023 in file order, the official one (--draw seeded: a draw)
    python data/build.py dev --problems data/bench/aime_1983_2023.jsonl --size 512 --out data/r1_7b/dev.jsonl
    # bounds: both models on the same dev problems with the sampling settings of the dev evaluation
    python data/build.py bounds --short Qwen/Qwen2.5-7B-Instruct --long deepseek-ai/DeepSeek-R1-Distill-Qwen-7B \
        --problems data/bench/dev.jsonl --out data/r1_7b/bounds.json --temperature 0.7 --max_new_tokens 8192
    # any sampling stage on every GPU: each process answers every 8th problem, rank 0 merges and grades
    torchrun --nproc_per_node=8 data/build.py system2 --model ... (the same flags)

Problems are JSON Lines {"id", "problem", "answer"}. The data sets are JSON Lines {"id", "problem", "response"}
in the format train.py reads, each response as the model wrote it. A short model that does not think (no <think>
token) answers directly; training renders such an answer after an empty thought (prompts.example_ids), so that
System-1 examples close their thinking as R1's answers do, only at once.
"""

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (PROBLEM_TYPES, ArgumentParser, atomic_write, check_outputs, check_settings,  # noqa: E402
                    jsonl_text, make_dirs, read_jsonl, run)
from grade import grade_responses  # noqa: E402
from prompts import load_for_sampling, sample_file  # noqa: E402
from ratio import Bounds  # noqa: E402
from sample import generate, release_engine  # noqa: E402


def sample_and_grade(model_dir, problems, samples_path, args, n):
    """All n completions of every problem (resumable; under torchrun every process answers its share), graded on
    rank 0: its rows with "correct" and "pred"; the other processes get None. What made the samples is in
    SAMPLES.settings.json (a rerun with another model or settings is refused)."""
    model, tok, rank = load_for_sampling(model_dir)  # a model directory, a run's chosen.json, or a run's folder
    try:
        rows = sample_file(model, tok, problems, samples_path, generate, n=n, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
                           reads=args.problems)
    except ValueError as e:  # samples made otherwise, or a damaged samples file
        sys.exit(f"error: {e}")
    release_engine()  # the engine holds the model and its cache: free both before the next model (bounds)
    del model
    if rank != 0:
        return None
    wanted = {str(p["id"]) for p in problems}
    rows = [r for r in rows if str(r["id"]) in wanted and r["sample"] < n]
    verdicts = grade_responses([r["response"] for r in rows], [str(r["answer"]) for r in rows],
                               truncated=[r["finish"] == "length" for r in rows])
    for r, v in zip(rows, verdicts):
        r.update(v)
    return rows


def write_dataset(rows, out: Path, pick):
    """One example per problem, chosen by `pick` among its correct responses; problems without any are counted."""
    by_problem = defaultdict(list)
    for r in rows:
        by_problem[str(r["id"])].append(r)
    kept, none_correct = [], []
    for pid, rs in by_problem.items():
        correct = [r for r in rs if r["correct"]]
        if not correct:
            none_correct.append(pid)
            continue
        best = pick(correct)
        kept.append({"id": best["id"], "problem": best["problem"], "response": best["response"],
                     "tokens": best["tokens"]})
    if not kept:
        sys.exit(f"error: no problem got a correct answer ({len(by_problem)} problems); {out} is not written")
    atomic_write(out, jsonl_text(kept))
    tokens = sum(k["tokens"] for k in kept) / len(kept)
    print(f"build: {out}: {len(kept)} examples (mean {tokens:.0f} tokens); {len(none_correct)} of "
          f"{len(by_problem)} problems had no correct answer and are left out"
          + (f": {', '.join(none_correct[:10])}" + (" ..." if len(none_correct) > 10 else "") if none_correct else ""))
    return kept


def build_dev(args, problems, out):
    """The first --size problems in file order, as the official bounds and dev evaluation used them (the first
    512 of AIME 1983-2023); --draw seeded takes a seeded random --size instead (kept in the file's order)."""
    if not 0 < args.size <= len(problems):
        sys.exit(f"error: --size {args.size}: {args.problems} has {len(problems)} problems")
    if args.draw == "first":
        keep, how = range(args.size), "the first"
    else:
        keep, how = sorted(random.Random(args.seed).sample(range(len(problems)), args.size)), f"seed {args.seed}:"
    atomic_write(out, jsonl_text([problems[i] for i in keep], ensure_ascii=False))
    print(f"build: {out}: {how} {args.size} of the {len(problems)} problems of {args.problems}")


def build_dataset(args, problems, out):
    rows = sample_and_grade(args.model, problems, out.with_suffix(".samples.jsonl"), args, args.samples)
    if rows is None:
        return
    # System-2 keeps the shortest correct answer (the long model's most efficient correct reasoning);
    # System-1 keeps the first correct one (one sample per problem in the recipe)
    pick = (lambda rs: min(rs, key=lambda r: (r["tokens"], r["sample"]))) if args.stage == "system2" else \
           (lambda rs: min(rs, key=lambda r: r["sample"]))
    write_dataset(rows, out, pick)


def build_bounds(args, problems, out):
    measured = {}
    for name, model_dir in (("short", args.short), ("long", args.long)):
        rows = sample_and_grade(model_dir, problems, out.with_suffix(f".{name}.jsonl"), args, args.samples)
        if rows is not None:
            measured[name] = (sum(r["tokens"] for r in rows) / len(rows), sum(r["correct"] for r in rows) / len(rows))
            print(f"build: bounds: {name} model {model_dir}: {measured[name][0]:.1f} tokens, "
                  f"accuracy {measured[name][1]:.3f}")
    if not measured:
        return
    try:
        bounds = Bounds(measured["short"][0], measured["short"][1], measured["long"][0], measured["long"][1])
    except ValueError as e:
        sys.exit(f"error: the measured bounds cannot drive TLDR: {e}")
    # what the samples were made with (sample_file refuses to resume samples made otherwise, so it is this
    # command's settings; train.py compares "sampling" with its dev evaluation's)
    made = {name: json.loads(out.with_suffix(f".{name}.settings.json").read_text()) for name in ("short", "long")}
    sampling = {k: made["long"]["sampling"][k] for k in ("temperature", "top_p", "max_new_tokens")}
    atomic_write(out, bounds.to_json(short_model=args.short, long_model=args.long, problems=len(problems),
                                          samples=args.samples, sampling=sampling, made_with=made))
    print(f"build: wrote {out}")


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("stage", choices=["system1", "system2", "bounds", "dev"])
    p.add_argument("--model", help="the model that answers (system1: the short model, system2: the long one)")
    p.add_argument("--short", help="bounds: the short model M_S")
    p.add_argument("--long", help="bounds: the long model M_L")
    p.add_argument("--problems", required=True, help="JSON Lines {'id', 'problem', 'answer'}")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=1, help="samples per problem (system2: 8 in the recipe)")
    p.add_argument("--limit", type=int, default=0, help="only the first N problems (0 = all)")
    p.add_argument("--size", type=int, default=512, help="dev: problems taken")
    p.add_argument("--draw", choices=["first", "seeded"], default="first",
                   help="dev: the first --size in file order (the official dev set), or a draw with --seed")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=64, help="sequences decoded at once, per process")
    args = p.parse_args(argv)
    check_settings(vars(args))
    if args.stage in ("system1", "system2") and not args.model:
        p.error(f"{args.stage} needs --model")
    if args.stage == "bounds" and not (args.short and args.long):
        p.error("bounds needs --short and --long")
    try:
        problems = read_jsonl(args.problems, required=("id", "problem", "answer"), types=PROBLEM_TYPES, unique="id")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    problems = problems[:args.limit] if args.limit else problems
    if not problems:
        sys.exit(f"error: {args.problems} has no problems")
    out = Path(args.out)
    check_outputs({"--out": out}, {"--problems": args.problems})
    make_dirs(out.parent)
    if args.stage == "dev":
        return build_dev(args, problems, out)
    (build_bounds if args.stage == "bounds" else build_dataset)(args, problems, out)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(main, "every sample written so far is kept (OUT.samples.jsonl); the same command continues from them")
