"""
Evaluate a model on math benchmarks the way the TLDR paper does: generate with sample.py's engine from
the DeepSeek-R1 prompt, grade the final answers with grade.py, and report accuracy and output length.

    python evaluate.py --model out/tldr --bench gsm8k,math500,aime24,amc23 --protocol tldr-paper
    python evaluate.py --model out/base --bench math500 --protocol deepseek --max_new_tokens 16384
    python evaluate.py --model out/tldr --bench gsm8k,math500,aime24,amc23 \\
        --compare out/eval/base-tldr-paper/summary.json          # adds token reduction and accuracy change
    torchrun --nproc_per_node=8 evaluate.py --model out/tldr      # every GPU answers its share

Responses, summary.json and summary.md go to --out_dir. Benchmarks are JSON Lines with "id", "problem",
"answer" in --data_dir (default data/bench, written by `python data/prepare.py`; the tests use
../shared/data), or paths of .jsonl files of one's own.

Every response is graded twice (grade.py): by the strict rules, the main numbers, and by the rules of the
SkyThought harness behind the TLDR paper's table ("paper's rules"), so that a comparison with the paper is
like for like. Responses are always graded against the benchmark file's current answers. A rerun into the
same --out_dir adds only what is missing, and refuses responses made with another model or other settings
(each BENCH.settings.json says how BENCH.jsonl was made). To grade responses made elsewhere, use
`python grade.py FILE`.
"""

import json
import math
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import (PROBLEM_TYPES, ArgumentParser, atomic_write, check_outputs, check_settings, jsonl_text, read_json,
                    read_jsonl, run)
from grade import grade_responses

ROOT = Path(__file__).resolve().parent

# benchmark name -> file in --data_dir (written by data/prepare.py)
BENCHMARKS = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "amc23": "amc23.jsonl",
    "dev": "aime_1983_2023.jsonl",  # the TLDR dev set (AIME 1983-2023)
}
TITLES = {"gsm8k": "GSM8K", "math500": "MATH500", "aime24": "AIME24", "amc23": "AMC23", "dev": "Dev (AIME 83-23)"}

# The paper's prompts: SkyThought's task templates (skythought/skythought_evals/tasks/*/*.yaml of the official
# release), the whole user turn, no system prompt. GSM8K's is the one its published logs show (the
# input_conversation of reason_eval_log/DS-R1-7B-TLDR/.../gsm8k/*.json): the yaml at a460888 ends with a
# "\n<think>" that those logs do not have. Any other benchmark gets the math template.
BOXED = "Return your final response within \\boxed{{}}. {problem}"
SKYTHOUGHT_PROMPTS = {
    "gsm8k": "Given the following problem, reason and give a final answer to the problem.\nProblem: {problem}\n"
             "Your response should end with \"The final answer is [answer]\" where [answer] is the response to the "
             "problem.",
    "math500": BOXED, "aime24": BOXED, "amc23": BOXED,
}

# Named protocols; every sampling setting can be overridden on the command line. samples: per benchmark ("*": any
# other, else 1); prompts: {benchmark: user-turn template} (None: the R1 prompt that training uses, prompts.prompt_text)
PROTOCOLS = {
    # DeepSeek's protocol for the R1 models (R1 paper / model card); one sample per problem unless --samples
    "deepseek": dict(temperature=0.6, top_p=0.95, max_new_tokens=32768, samples={}, prompts=None),
    # the TLDR paper (eval_script/eval_tldr_weight.sh): AIME24 and AMC23 are small, so 8 samples each and
    # accuracy averaged over them; SkyThought's prompts
    "tldr-paper": dict(temperature=0.7, top_p=1.0, max_new_tokens=8192, samples={"aime24": 8, "amc23": 8},
                       prompts=SKYTHOUGHT_PROMPTS),
    # the paper's protocol at the cap and sample count the rival methods report with (32k tokens, 16 samples on the
    # small sets): beside tldr-paper it shows how much of a model's compression is answers cut at 8192
    "long": dict(temperature=0.7, top_p=1.0, max_new_tokens=32768, samples={"aime24": 16, "amc23": 16},
                 prompts=SKYTHOUGHT_PROMPTS),
    # the protocol of the field's latest one-table comparison of compressed R1-Distill-Qwen-7B models (DLER, NVIDIA
    # 2025, the model card's sampling: temperature 0.6, top_p 0.95): 32k tokens, 16 samples on every benchmark but
    # GSM8K and MATH500, DeepSeek's prompt
    "dler": dict(temperature=0.6, top_p=0.95, max_new_tokens=32768, samples={"gsm8k": 1, "math500": 1, "*": 16},
                 prompts=None),
}


def protocol_samples(protocol: str, bench: str) -> int:
    samples = PROTOCOLS[protocol]["samples"]
    return samples.get(bench, samples.get("*", 1))


def prompt_template(protocol: str, bench: str) -> str | None:
    prompts = PROTOCOLS[protocol]["prompts"]
    return None if prompts is None else prompts.get(bench, BOXED)

# -----------------------------------------------------------------------------
# Metrics and reports


def pass_at_k(n, c, k):
    """Unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), as a product so that it stays exact for large n."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def quantile(xs, q):
    """numpy's default (linear) quantile of a list, None for an empty one."""
    xs = sorted(xs)
    if not xs:
        return None
    at = q * (len(xs) - 1)
    lo = int(at)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (at - lo)


def standard_error(per_problem: list[float]) -> float | None:
    """The standard error of an accuracy averaged over problems (each problem's mean over its samples): the spread
    across problems carries both the problems' difficulty and the samples' luck. None for a single problem."""
    n = len(per_problem)
    if n < 2:
        return None
    mean = sum(per_problem) / n
    return math.sqrt(sum((x - mean) ** 2 for x in per_problem) / (n - 1) / n)


def bench_metrics(problems, responses, n):
    """Metrics of one benchmark: problems are its rows, responses the graded samples (n per problem;
    a missing sample, e.g. a prompt longer than the model's context, counts as wrong)."""
    by_id = defaultdict(list)
    for r in responses:
        by_id[str(r["id"])].append(r)
    correct = [sum(r["correct"] for r in by_id[str(p["id"])]) for p in problems]
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n} | {n})
    m = {
        "problems": len(problems),
        "samples": n,
        "responses": len(responses),
        "missing": len(problems) * n - len(responses),
        "accuracy": sum(correct) / (len(problems) * n),  # averaged over samples
        "accuracy_se": standard_error([c / n for c in correct]),
        # the same responses graded by the rules of the paper's harness (grade.py --rules skythought)
        "accuracy_paper": sum(r["correct_paper"] for r in responses) / (len(problems) * n),
        "pass@k": {str(k): _mean(pass_at_k(n, c, k) for c in correct) for k in ks},
        # output tokens in the model's own tokenizer: the generated ids, the stop token included
        "tokens": _mean(r["tokens"] for r in responses),
        "tokens_median": quantile([r["tokens"] for r in responses], 0.5),
        "tokens_p90": quantile([r["tokens"] for r in responses], 0.9),
        "tokens_correct": _mean(r["tokens"] for r in responses if r["correct"]),
        "tokens_wrong": _mean(r["tokens"] for r in responses if not r["correct"]),
        "cut_at_limit": _mean(r["finish"] == "length" for r in responses),  # the share of answers cut at the cap
        "grading_errors": dict(Counter(r["error"].split(":")[0] for r in responses if r["error"])),
    }
    if any("level" in p for p in problems):  # MATH500 by difficulty level
        levels = defaultdict(list)
        for p in problems:
            levels[str(p.get("level"))].append(p)
        m["by_level"] = {}
        for level, ps in sorted(levels.items()):
            rs = [r for p in ps for r in by_id[str(p["id"])]]
            m["by_level"][level] = {"problems": len(ps), "accuracy": sum(r["correct"] for r in rs) / (len(ps) * n),
                                    "tokens": _mean(r["tokens"] for r in rs)}
    return m


def compare_summaries(summary, base):
    """Token reduction and accuracy change against a baseline run, per benchmark both have."""
    out = {}
    for b, m in summary["benchmarks"].items():
        bm = base["benchmarks"].get(b)
        if bm and m["tokens"] and bm["tokens"]:
            out[b] = {"accuracy_change": m["accuracy"] - bm["accuracy"],
                      "token_reduction": 1 - m["tokens"] / bm["tokens"]}
    return out


def _fmt(x, pct=False):
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def markdown_report(summary, base=None):
    """The paper's table (accuracy % / mean tokens per benchmark, one row per model, and the change
    against the baseline), then details per benchmark and MATH500 by level."""
    benches = list(summary["benchmarks"])
    s = summary["settings"]
    samples = ", ".join(f"{b} {m['samples']}" for b, m in summary["benchmarks"].items())
    lines = [f"# Evaluation of {summary['model']}", "",
             f"Protocol {s['protocol']}: temperature {s['temperature']}, top_p {s['top_p']}, up to "
             f"{s['max_new_tokens']} new tokens; samples per problem: {samples}. "
             f"Cells: accuracy % (in parentheses: under the paper's rules, the SkyThought harness) / "
             f"mean output tokens.", "",
             "| model | " + " | ".join(TITLES.get(b, b) for b in benches) + " |",
             "| --- |" + " ---: |" * len(benches)]

    def row(name, s):
        cells = []
        for b in benches:
            m = s["benchmarks"].get(b)
            if not m:
                cells.append("-")
                continue
            paper = f" ({_fmt(m['accuracy_paper'], True)})" if "accuracy_paper" in m else ""
            cells.append(f"{_fmt(m['accuracy'], True)}{paper} / {_fmt(m['tokens'])}")
        return f"| {name} | " + " | ".join(cells) + " |"

    if base:
        lines.append(row(f"{base['model']} (baseline)", base))
    lines.append(row(summary["model"], summary))
    if base:
        change = summary["compare"]["benchmarks"]
        cells = [f"{100 * change[b]['accuracy_change']:+.1f} pt / "
                 f"{100 * (summary['benchmarks'][b]['tokens'] / base['benchmarks'][b]['tokens'] - 1):+.1f}% tokens"
                 if b in change else "-" for b in benches]
        lines.append("| change | " + " | ".join(cells) + " |")

    ks = sorted({k for m in summary["benchmarks"].values() for k in m["pass@k"]}, key=int)
    lines += ["", "## Details", "",
              "| benchmark | problems x samples | accuracy ± s.e. | paper's rules | " +
              " | ".join(f"pass@{k}" for k in ks) + " | tokens: mean / median / p90 | tokens: correct / wrong | "
              "cut at limit | grading errors |",
              "| --- |" + " ---: |" * (len(ks) + 7)]
    for b, m in summary["benchmarks"].items():
        passes = " | ".join(_fmt(m["pass@k"].get(k), True) for k in ks)
        errors = ", ".join(f"{v} {k}" for k, v in m["grading_errors"].items()) or "0"
        missing = f" ({m['missing']} missing)" if m["missing"] else ""
        lengths = " / ".join(_fmt(m[k]) for k in ("tokens", "tokens_median", "tokens_p90"))
        split = f"{_fmt(m['tokens_correct'])} / {_fmt(m['tokens_wrong'])}"
        se = f" ± {_fmt(m['accuracy_se'], True)}" if m["accuracy_se"] is not None else ""
        lines.append(f"| {TITLES.get(b, b)} | {m['problems']} x {m['samples']}{missing} | "
                     f"{_fmt(m['accuracy'], True)}{se} | {_fmt(m.get('accuracy_paper'), True)} | {passes} | "
                     f"{lengths} | "
                     f"{split} | {_fmt(m['cut_at_limit'], True)}% | {errors} |")
    for b, m in summary["benchmarks"].items():
        if "by_level" in m:
            lines += ["", f"## {TITLES.get(b, b)} by level", "", "| level | problems | accuracy | tokens |",
                      "| --- | ---: | ---: | ---: |"]
            lines += [f"| {lv} | {x['problems']} | {_fmt(x['accuracy'], True)} | {_fmt(x['tokens'])} |"
                      for lv, x in m["by_level"].items()]
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# The evaluation run


def read_benchmarks(args):
    """{name: problem rows} and {name: file} of every --bench, read (and checked) before any model is loaded."""
    # a name from BENCHMARKS (a file in --data_dir), or the path of a JSON Lines file of one's own
    names = [b.strip() for b in args.bench.split(",") if b.strip()]
    unknown = [b for b in names if b not in BENCHMARKS and not b.endswith(".jsonl")]
    if unknown or not names:
        sys.exit(f"error: unknown benchmark {', '.join(unknown) or '(none given)'}; choose from "
                 f"{', '.join(BENCHMARKS)}, or give the path of a .jsonl file")
    problems, sources = {}, {}
    for b in names:
        name, path = (Path(b).stem, Path(b)) if b.endswith(".jsonl") else (b, Path(args.data_dir) / BENCHMARKS[b])
        if name in sources:  # its responses and metrics are stored under its name
            sys.exit(f"error: two benchmarks are named {name} ({sources[name]} and {path}): their responses would "
                     f"share one file; rename one of them")
        sources[name] = path
        if not path.is_file():
            sys.exit(f"error: {path} not found; run `python data/prepare.py` first, or pass --data_dir")
        try:
            rows = read_jsonl(path, required=("id", "problem", "answer"), types=PROBLEM_TYPES, unique="id")
        except ValueError as e:
            sys.exit(f"error: {e}")
        if not rows:
            sys.exit(f"error: {path} has no problems")
        problems[name] = rows[:args.limit] if args.limit else rows
    return problems, sources


def grade_benchmark(name, problems, done, n, workers):
    """Grade a benchmark's responses by both rule sets against the benchmark file's current answers (not the
    ones stored with the responses, which an edited answer key would leave stale)."""
    answer = {str(p["id"]): str(p["answer"]) for p in problems}
    selected = [r for r in done if str(r["id"]) in answer and r["sample"] < n]
    responses, answers = [r["response"] for r in selected], [answer[str(r["id"])] for r in selected]
    truncated = [r["finish"] == "length" for r in selected]
    strict = grade_responses(responses, answers, workers=workers, truncated=truncated)
    paper = grade_responses(responses, answers, workers=workers, rules="skythought", gsm8k=name == "gsm8k")
    for r, a, g, p in zip(selected, answers, strict, paper):
        r.update(answer=a, **g, correct_paper=p["correct"], pred_paper=p["pred"])
    return selected


def protocol_settings(args) -> dict:
    protocol = PROTOCOLS[args.protocol]
    return {"protocol": args.protocol,
            "temperature": protocol["temperature"] if args.temperature is None else args.temperature,
            "top_p": protocol["top_p"] if args.top_p is None else args.top_p,
            "max_new_tokens": args.max_new_tokens or protocol["max_new_tokens"],
            "seed": args.seed}


def read_baseline(path):
    try:
        base = read_json(path)
    except (OSError, ValueError) as e:
        sys.exit(f"error: the baseline summary (--compare): {e}")
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
    if not (isinstance(base, dict) and isinstance(base.get("benchmarks"), dict) and all(
            isinstance(m, dict) and number(m.get("accuracy")) and (m.get("tokens") is None or number(m["tokens"]))
            and "tokens" in m for m in base["benchmarks"].values())):
        sys.exit(f"error: {path} is not a summary.json written by evaluate.py (--compare needs one)")
    return base


def answer_benchmark(model, tok, b, rows, out, source, settings, args, rank, log):
    """Benchmark b's completions into `out` (resumable: sample_file appends each as it finishes and skips the (id,
    sample) pairs already done), then, on rank 0, graded: its metrics (None on the other processes)."""
    from prompts import sample_file
    from sample import generate
    n = settings["samples"][b]
    log(f"evaluate: {b}: {len(rows)} problems x {n} samples -> {out}")
    keep = ("id", "problem", "answer", "level")
    try:
        done = sample_file(model, tok, [{k: p[k] for k in keep if k in p} for p in rows], out, generate, n=n,
                           template=prompt_template(args.protocol, b), batch_size=args.batch_size,
                           max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
                           top_p=settings["top_p"], seed=args.seed, reads=source)
    except ValueError as e:  # a damaged responses file
        sys.exit(f"error: {e}")
    if rank != 0:
        return None
    t0 = time.time()
    graded = grade_benchmark(b, rows, done, n, args.workers)
    atomic_write(out, jsonl_text(done))  # every line kept, also those of an earlier, larger run
    m = bench_metrics(rows, graded, n)
    log(f"evaluate: {b}: accuracy {100 * m['accuracy']:.1f}% (paper's rules {100 * m['accuracy_paper']:.1f}%), "
        f"mean tokens {_fmt(m['tokens'])} (graded in {time.time() - t0:.1f} s)")
    return m


def run_evaluation(args):
    # the model and the engine need torch; grading does not, so they are imported here
    import torch
    from checkpoint import model_path
    from prompts import INSTRUCTION, load_for_sampling

    try:
        args.model = str(model_path(args.model))
    except ValueError as e:
        sys.exit(f"error: {e}")
    (problems, sources), settings = read_benchmarks(args), protocol_settings(args)
    base = read_baseline(args.compare) if args.compare else None
    out_dir = Path(args.out_dir or Path("out") / "eval" / f"{Path(args.model).resolve().name}-{args.protocol}")
    check_outputs({"its summary": out_dir / "summary.json", "its table": out_dir / "summary.md"},
                  {"--compare": args.compare, **{f"the benchmark {b}": path for b, path in sources.items()}})
    model, tok, rank = load_for_sampling(args.model, args.dtype)  # under torchrun every GPU answers its share
    log = print if rank == 0 else (lambda *a, **k: None)

    # the user turn of every benchmark's prompts, as the summary and the report show it
    r1_prompt = "\n".join(filter(None, ["{problem}", tok.init_kwargs.get("prompt_instruction", INSTRUCTION)]))
    settings["prompts"] = {b: prompt_template(args.protocol, b) or r1_prompt for b in problems}
    settings["samples"] = {b: args.samples or protocol_samples(args.protocol, b) for b in problems}
    summary = {"model": args.model, "settings": settings, "benchmarks": {}}
    for b, rows in problems.items():
        metrics = answer_benchmark(model, tok, b, rows, out_dir / f"{b}.jsonl", sources[b], settings, args, rank,
                                   log)
        if metrics is not None:  # (rank 0 grades and reports)
            summary["benchmarks"][b] = metrics
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return None
    if base:
        summary["compare"] = {"baseline": args.compare, "benchmarks": compare_summaries(summary, base)}
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    report = markdown_report(summary, base)
    atomic_write(out_dir / "summary.md", report)
    print(report)
    return summary


# -----------------------------------------------------------------------------


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="model directory (config.json, *.safetensors, tokenizer), the "
                   "chosen.json of a training run, or a run's folder (its latest checkpoint)")
    p.add_argument("--bench", default="gsm8k,math500,aime24,amc23",
                   help=f"comma-separated: {', '.join(BENCHMARKS)}, or paths of .jsonl files")
    p.add_argument("--protocol", choices=PROTOCOLS, default="tldr-paper")
    p.add_argument("--temperature", type=float, help="override the protocol's temperature")
    p.add_argument("--top_p", type=float, help="override the protocol's top_p")
    p.add_argument("--max_new_tokens", type=int, help="override the protocol's token limit")
    p.add_argument("--samples", type=int, help="samples per problem on every benchmark (default: the protocol's)")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark (a quick look)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=32, help="sequences decoded at once")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on cuda, else float32")
    p.add_argument("--data_dir", default=str(ROOT / "data" / "bench"), help="benchmark files (default data/bench)")
    p.add_argument("--out_dir", help="default out/eval/<model name>-<protocol>")
    p.add_argument("--compare", metavar="BASE_SUMMARY", help="summary.json of a baseline run: adds the token "
                   "reduction and accuracy change")
    p.add_argument("--workers", type=int, default=2, help="grading processes")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    check_settings(vars(args))
    return run_evaluation(args)


if __name__ == "__main__":
    run(main, "every response written so far is kept; the same command continues from them")
