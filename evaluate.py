"""
Evaluate a model on math benchmarks the way the TLDR paper does: generate with sample.py's engine
from the DeepSeek-R1 prompt, grade the final answers, and report accuracy and output length.

Evaluate a model (responses, summary.json and summary.md go to --out-dir):

    python evaluate.py --model out/tldr --bench gsm8k,math500,aime24,amc23 --protocol tldr-paper
    python evaluate.py --model out/base --bench math500 --protocol deepseek --max-new-tokens 16384
    python evaluate.py --model out/tldr --bench gsm8k,math500,aime24,amc23 \\
        --compare out/eval/base-tldr-paper/summary.json          # adds token reduction and accuracy change

Grade responses produced elsewhere (vLLM, another harness): each line needs "response" and "answer";
each line is written back with "correct" and "pred" (the extracted answer) added:

    python evaluate.py grade responses.jsonl --out graded.jsonl
    python evaluate.py grade ../shared/data/r1_outputs/DS-R1-7B-TLDR_math500.jsonl --agree skythought_correct

Benchmarks are JSON Lines with "id", "problem", "answer" in --data-dir (default data/bench, written by
`python data/prepare.py`; the tests use ../shared/data).

How an answer is graded:
- The final answer is the last \\boxed{} after "</think>" (the whole response if the model did not think),
  with the boxes of one closing phrase joined ("\\boxed{-2} and \\boxed{1}" -> "-2, 1"). Without a box, the
  last value of the closing sentence, if that sentence is finished ("Therefore, the midpoint is (-1, 6).").
- A response cut at the token limit gets credit only for a box after "</think>": a number picked out
  of unfinished reasoning is not an answer. For foreign files, a "finish" or "finish_reason" field equal
  to "length" marks such responses.
- Plain numbers are compared as numbers (025 = 25, 10,\\!080 = 10080, $18.00 = 18); everything else by
  math-verify with the reference answer first (sets, intervals, matrices, LaTeX forms).
- Comparisons run in worker processes on both cores, each under a time limit enforced by the parent
  (math-verify's own limit uses signal.alarm, which works only in the main thread): a stuck worker is
  killed and replaced, and the response counts as wrong with error "timeout".
"""

import argparse
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict, deque
from fractions import Fraction
from pathlib import Path

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

ROOT = Path(__file__).resolve().parent

# benchmark name -> file in --data-dir (written by data/prepare.py)
BENCHMARKS = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "amc23": "amc23.jsonl",
    "dev": "aime_1983_2023.jsonl",  # the TLDR dev set (AIME 1983-2023)
}
TITLES = {"gsm8k": "GSM8K", "math500": "MATH500", "aime24": "AIME24", "amc23": "AMC23", "dev": "Dev (AIME 83-23)"}

# Named sampling protocols; every setting can be overridden on the command line.
PROTOCOLS = {
    # DeepSeek's protocol for the R1 models (R1 paper / model card); one sample per problem unless --samples
    "deepseek": dict(temperature=0.6, top_p=0.95, max_new_tokens=32768, samples={}),
    # the TLDR paper: AIME24 and AMC23 are small, so 8 samples each and accuracy averaged over them
    "tldr-paper": dict(temperature=0.7, top_p=1.0, max_new_tokens=8192, samples={"aime24": 8, "amc23": 8}),
}

GRADE_TIMEOUT = 5.0  # seconds for one comparison; normal ones take milliseconds

# -----------------------------------------------------------------------------
# Answer extraction


def _brace_pairs(text):
    """Map each unescaped "{" to the index of its matching "}" in one pass (linear even on garbage)."""
    pairs, stack, i = {}, [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":  # \{ and \} are literal braces, \\ a line break
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


_WORD = re.compile(r"[^\s$]+")


def _boxes(text):
    """The top-level \\boxed{...} / \\fbox{...} in text as (start, end, content). A box left open by a
    response that was cut inside it is not an answer."""
    pairs, out, end = _brace_pairs(text), [], -1
    for m in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        if m.start() < end:  # inside the previous box, e.g. \boxed{\boxed{5}}
            continue
        i = m.end()
        if i < len(text) and text[i] == "{":
            if i in pairs:
                out.append((m.start(), pairs[i] + 1, text[i + 1:pairs[i]].strip()))
                end = pairs[i] + 1
        else:  # "\boxed 5"
            word = _WORD.match(text, i)
            if word:
                out.append((m.start(), word.end(), word.group()))
                end = word.end()
    return [b for b in out if b[2]]


# A "closing sentence" candidate value: inline or display math, or a plain number / fraction.
_MATH_SPAN = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|\$(?!\s)([^$]+?)(?<!\s)\$(?!\d)", re.S)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?")
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?'*")  # "\( x \)" names a quantity, it is not a value


def _closing_answer(text):
    """The value stated by the last sentence of text, if that sentence is finished. Used when there
    is no box: "Thus, there are 8 integer values of \\( t \\)." -> "8"."""
    text = text.rstrip(" \t\r\n*")  # and trailing markdown bold
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    # "The total is:\n\n$17,500" or "**Final Answer**\n18": a bare value announced by the line before
    if len(lines) > 1 and _plain_number(lines[-1]) is not None and (
            lines[-2].endswith(":") or "answer" in lines[-2].lower()):
        return lines[-1]
    # "**Answer:** 18" or "The final answer is 18": a bare value announced on the last line itself
    announced = re.search(r"answer\W*(?:is\W*)?(-?\$?\d[\d,]*(?:\.\d+)?)[.*\s]*$", lines[-1][-200:], re.I)
    if announced:
        return announced.group(1)
    # otherwise the last sentence must be complete; a response cut mid-sentence has no answer
    if not text.endswith((".", "!", "\\]", "$$")):
        return None
    # (the last 2000 characters are plenty for a sentence and keep the regexes below fast on any input)
    sentence = re.split(r"(?<=[.!])\s+(?=\S)|\n\s*\n", text[-2000:].rstrip(".!"))[-1]
    candidates = []
    last = 0
    for m in _MATH_SPAN.finditer(sentence):
        candidates += [(n.start() + last, n.group()) for n in _NUMBER.finditer(sentence[last:m.start()])]
        span = next(g for g in m.groups() if g is not None).strip()
        if span and not _VARIABLE.fullmatch(span):
            candidates.append((m.start(), span))
        last = m.end()
    candidates += [(n.start() + last, n.group()) for n in _NUMBER.finditer(sentence[last:])]
    return max(candidates)[1] if candidates else None


def extract_answer(response, truncated=False):
    """The text of the final answer of a response, or None. truncated: the response was cut at the
    token limit (then only a box after </think> counts)."""
    if not isinstance(response, str):  # e.g. null from a harness whose request failed
        return None
    if "</think>" in response:
        region = response.rsplit("</think>", 1)[1]
    elif truncated:
        return None  # cut while still thinking
    else:
        region = response  # a model that answered without a think block
    boxes = _boxes(region)
    if boxes:
        # boxes joined by a short phrase form one answer: "\boxed{-2} and \boxed{1}"
        group = [boxes[-1]]
        for b in reversed(boxes[:-1]):
            gap = region[b[1]:group[0][0]]
            if len(gap) > 40 or "\n\n" in gap or re.search(r"[.!?:]\s", gap):
                break
            group.insert(0, b)
        values = list(dict.fromkeys(b[2] for b in group))
        return ", ".join(values)
    if truncated:
        return None  # finished thinking but was cut before committing to an answer
    return _closing_answer(region)


# -----------------------------------------------------------------------------
# Answer comparison


def _plain_number(text):
    """The value of text if it is a plain number, possibly with thousands separators, a currency or
    percent sign, degrees or a unit word ("\\$1,000", "10,\\!080", "5.4 \\text{ cents}", "90^\\circ");
    else None. Returns (value, is_percent)."""
    if len(text) > 80:  # not a plain number; also keeps the regexes here cheap on any input
        return None
    t = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r" \1 ", text)
    t = re.sub(r",\\!\s*|\{,\}", ",", t)  # 10,\!080 and 10{,}080
    t = re.sub(r"(?<=\d)\\[,;! ](?=\d)", "", t)  # 10\,080
    t = re.sub(r"\^\s*\{?\\circ\}?|°|\\[$]|\$|\\left|\\right", "", t)
    percent = bool(re.search(r"\\?%", t))
    t = re.sub(r"\\?%", "", t).strip().rstrip(".")
    m = re.fullmatch(r"([-+]?)\s*(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?((?:\s*\b[a-zA-Z]{2,}\b\.?)*)", t)
    if not m or not (m.group(2) or m.group(3)):
        return None
    value = Fraction((m.group(2) or "0").replace(",", "") + (m.group(3) or ""))
    return (-value if m.group(1) == "-" else value), percent


def _gold_alternatives(gold):
    """A reference answer may list accepted values: "080 or 081 (both were accepted)"."""
    parts = re.split(r"\s+or\s+", re.sub(r"\s*\([^()]*\)\s*$", "", gold.strip()))
    if len(parts) > 1 and all(_plain_number(p) is not None for p in parts):
        return parts
    return [gold]


_PARSE_CONFIG = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _parse(text):
    # timeouts disabled: the parent process enforces the time limit (math-verify would use signals)
    return parse("$" + text + "$", extraction_config=_PARSE_CONFIG, parsing_timeout=None)


def _normalize(text):
    return re.sub(r"\s+|\\left|\\right|\\!|\\,|\\text\{|\\mathrm\{|[{}$]", "", text).lower()


def answers_match(pred, gold):
    """True if the predicted answer text equals the reference answer. May be slow or raise on
    pathological input: call it through grade_responses, which bounds its time."""
    for g in _gold_alternatives(gold):
        gn, pn = _plain_number(g), _plain_number(pred)
        if gn is not None and pn is not None:
            # numbers as numbers: 025 = 25, 18.00 = 18, 50% = 50 and, when the reference is a fraction, 0.5
            if pn[0] == gn[0] or (pn[1] and not gn[1] and pn[0] / 100 == gn[0]):
                return True
            continue
        gold_parsed = _parse(g)
        if all(isinstance(x, str) for x in gold_parsed):  # math-verify fell back to the raw string
            if _normalize(g) == _normalize(pred):
                return True
            raise ValueError(f"the reference answer {g!r} does not parse")
        if verify(gold_parsed, _parse(pred), timeout_seconds=None):
            return True
    return False


# -----------------------------------------------------------------------------
# Parallel grading with a time limit enforced from the parent


def _grade_worker():
    """A grading worker process: reads [pred, gold] jobs as JSON lines on stdin and answers each
    with [correct, error]. Started by grade_responses with `python -c`."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the protocol
    logging.disable(logging.WARNING)  # math-verify warns that its own timeouts are off: we have ours
    warnings.simplefilter("ignore")  # and sympy's deprecation notes are noise here
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        pred, gold = json.loads(line)
        try:
            result = [bool(answers_match(pred, gold)), None]
        except Exception as e:
            result = [False, f"exception: {type(e).__name__}: {e}"[:300]]
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


class _Worker:
    def __init__(self):
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import evaluate; evaluate._grade_worker()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready, self.job, self.deadline = False, None, None

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def grade_responses(responses, answers, workers=2, timeout=GRADE_TIMEOUT, truncated=None):
    """Grade responses against reference answers. Returns per response
    {"correct": bool, "pred": str | None, "error": None | "timeout" | "exception: ..."}.
    Runs on `workers` processes; each comparison gets `timeout` seconds, enforced from here by killing
    and replacing a stuck worker, so it works from any thread. Never raises on bad text."""
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    truncated = truncated or [False] * len(responses)
    preds = [extract_answer(r, t) for r, t in zip(responses, truncated)]
    results = [{"correct": False, "pred": p, "error": None} for p in preds]
    # identical (pred, reference) pairs are compared once: samples of one problem often agree
    jobs = defaultdict(list)
    for i, (p, a) in enumerate(zip(preds, answers)):
        if p is not None:
            jobs[(p, str(a))].append(i)
    todo = deque(jobs)
    pool = [_Worker() for _ in range(max(1, min(workers, len(todo))))] if todo else []
    try:
        while todo or any(w.job is not None for w in pool):
            for w in pool:  # hand out work to idle workers
                if w.ready and w.job is None and todo:
                    w.job = todo.popleft()
                    w.proc.stdin.write(json.dumps(w.job) + "\n")
                    w.proc.stdin.flush()
                    w.deadline = time.monotonic() + timeout
            busy = [w.deadline for w in pool if w.job is not None]
            wait = max(0.0, min(busy) - time.monotonic()) if busy else 60.0
            readable, _, _ = select.select([w.proc.stdout for w in pool], [], [], wait)
            for k, w in enumerate(pool):
                replace = False
                if w.proc.stdout in readable:
                    line = w.proc.stdout.readline()
                    if line.strip() == "ready":
                        w.ready = True
                        continue
                    if not line:  # the worker died (e.g. out of memory)
                        if w.job is None:
                            raise RuntimeError("a grading worker failed to start; its error is printed above")
                        outcome, replace = [False, "exception: the grading worker died"], True
                    else:
                        outcome = json.loads(line)
                elif w.job is not None and time.monotonic() > w.deadline:
                    outcome, replace = [False, "timeout"], True
                else:
                    continue
                for i in jobs[w.job]:
                    results[i]["correct"], results[i]["error"] = outcome
                w.job = None
                if replace:  # stuck or dead: a fresh worker takes its place
                    w.kill()
                    pool[k] = _Worker()
            if not busy and not readable and not any(w.ready for w in pool):
                raise RuntimeError("grading workers did not start within 60 s")
    finally:
        for w in pool:
            w.kill()
    return results


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
        "pass@k": {str(k): _mean(pass_at_k(n, c, k) for c in correct) for k in ks},
        "tokens": _mean(r["tokens"] for r in responses),
        "tokens_correct": _mean(r["tokens"] for r in responses if r["correct"]),
        "tokens_wrong": _mean(r["tokens"] for r in responses if not r["correct"]),
        "cut_at_limit": _mean(r["finish"] == "length" for r in responses),
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
             f"Cells: accuracy % / mean output tokens.", "",
             "| model | " + " | ".join(TITLES.get(b, b) for b in benches) + " |",
             "| --- |" + " ---: |" * len(benches)]

    def row(name, s):
        cells = []
        for b in benches:
            m = s["benchmarks"].get(b)
            cells.append(f"{_fmt(m['accuracy'], True)} / {_fmt(m['tokens'])}" if m else "-")
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
              "| benchmark | problems x samples | accuracy | " + " | ".join(f"pass@{k}" for k in ks)
              + " | tokens (all / correct / wrong) | cut at limit | grading errors |",
              "| --- |" + " ---: |" * (len(ks) + 5)]
    for b, m in summary["benchmarks"].items():
        passes = " | ".join(_fmt(m["pass@k"].get(k), True) for k in ks)
        errors = ", ".join(f"{v} {k}" for k, v in m["grading_errors"].items()) or "0"
        missing = f" ({m['missing']} missing)" if m["missing"] else ""
        lines.append(f"| {TITLES.get(b, b)} | {m['problems']} x {m['samples']}{missing} | {_fmt(m['accuracy'], True)} | "
                     f"{passes} | {_fmt(m['tokens'])} / {_fmt(m['tokens_correct'])} / {_fmt(m['tokens_wrong'])} | "
                     f"{_fmt(m['cut_at_limit'], True)}% | {errors} |")
    for b, m in summary["benchmarks"].items():
        if "by_level" in m:
            lines += ["", f"## {TITLES.get(b, b)} by level", "", "| level | problems | accuracy | tokens |",
                      "| --- | ---: | ---: | ---: |"]
            lines += [f"| {lv} | {x['problems']} | {_fmt(x['accuracy'], True)} | {_fmt(x['tokens'])} |"
                      for lv, x in m["by_level"].items()]
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# The evaluation run


def _read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: cannot read {what} {path}: {e}")


def _positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def run_evaluation(args):
    import torch  # the model and the engine need torch; grading does not, so it is imported here

    import sample
    from model import Transformer, atomic_write_text

    # a benchmark is a name from BENCHMARKS (a file in --data-dir) or the path of a JSON Lines file of one's own
    paths = {}
    for b in (b.strip() for b in args.bench.split(",") if b.strip()):
        paths[Path(b).stem if b.endswith(".jsonl") else b] = Path(b) if b.endswith(".jsonl") else \
            Path(args.data_dir) / BENCHMARKS[b] if b in BENCHMARKS else None
    benches = list(paths)
    unknown = [b for b in benches if paths[b] is None]
    if unknown or not benches:
        sys.exit(f"error: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; "
                 f"choose from {', '.join(BENCHMARKS)}, or give the path of a .jsonl file")
    protocol = PROTOCOLS[args.protocol]
    settings = {"protocol": args.protocol,
                "temperature": protocol["temperature"] if args.temperature is None else args.temperature,
                "top_p": protocol["top_p"] if args.top_p is None else args.top_p,
                "max_new_tokens": args.max_new_tokens or protocol["max_new_tokens"],
                "seed": args.seed}
    base = _read_json(args.compare, "the baseline summary") if args.compare else None
    if base is not None and not (isinstance(base.get("benchmarks"), dict) and all(
            isinstance(m, dict) and {"accuracy", "tokens"} <= set(m) for m in base["benchmarks"].values())):
        sys.exit(f"error: {args.compare} is not a summary.json written by evaluate.py (--compare needs one)")
    problems = {}
    for b in benches:  # read every benchmark before loading the model: bad input fails fast
        path = paths[b]
        if not path.is_file():
            sys.exit(f"error: {path} not found; run `python data/prepare.py` first, or pass --data-dir")
        try:
            rows = sample.read_jsonl(path, required=("id", "problem", "answer"), check=lambda r: None if (
                isinstance(r["problem"], str) and isinstance(r["answer"], (str, int, float))) else
                "'problem' must be a string and 'answer' a string or a number")
        except ValueError as e:
            sys.exit(f"error: {e}")
        if not rows:
            sys.exit(f"error: {path} has no problems")
        problems[b] = rows[:args.limit] if args.limit else rows

    out_dir = Path(args.out_dir or Path("out") / "eval" / f"{Path(args.model).resolve().name}-{args.protocol}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # responses made with other settings must not be mixed into this run's numbers
    stamp = {"model": str(Path(args.model).resolve()), **settings}
    if (out_dir / "settings.json").exists():
        old = _read_json(out_dir / "settings.json", "the settings of an earlier run")
        if old != stamp:
            diff = ", ".join(f"{k}: {old.get(k)} -> {v}" for k, v in stamp.items() if old.get(k) != v)
            sys.exit(f"error: {out_dir} holds responses made with other settings ({diff}); "
                     f"pass another --out-dir or delete it")
    atomic_write_text(out_dir / "settings.json", json.dumps(stamp, indent=1) + "\n")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    try:
        tok = sample.load_tokenizer(args.model)
        model = Transformer.from_pretrained(args.model, dtype=getattr(torch, dtype), device=device)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    model.eval()

    summary = {"model": args.model, "settings": settings, "benchmarks": {}}
    for b in benches:
        n = args.samples or protocol["samples"].get(b, 1)
        print(f"evaluate: {b}: {len(problems[b])} problems x {n} samples -> {out_dir / (b + '.jsonl')}")
        keep = ("id", "problem", "answer", "level")
        rows = [{k: p[k] for k in keep if k in p} for p in problems[b]]
        # sample_file appends each completion as it finishes and skips the (id, sample) pairs already done
        try:
            done = sample.sample_file(model, tok, rows, out_dir / f"{b}.jsonl", n=n, batch_size=args.batch_size,
                                      max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
                                      top_p=settings["top_p"], seed=args.seed)
        except ValueError as e:  # a damaged responses file
            sys.exit(f"error: {e}")
        t0 = time.time()
        graded = grade_responses([r["response"] for r in done], [str(r["answer"]) for r in done],
                                 workers=args.workers, truncated=[r["finish"] == "length" for r in done])
        for r, g in zip(done, graded):
            r.update(g)
        atomic_write_text(out_dir / f"{b}.jsonl", "".join(json.dumps(r) + "\n" for r in done))
        ids = {str(p["id"]) for p in problems[b]}
        selected = [r for r in done if str(r["id"]) in ids and r["sample"] < n]
        m = summary["benchmarks"][b] = bench_metrics(problems[b], selected, n)
        print(f"evaluate: {b}: accuracy {100 * m['accuracy']:.1f}%, mean tokens {_fmt(m['tokens'])} "
              f"(graded in {time.time() - t0:.1f} s)")
    if base:
        summary["compare"] = {"baseline": args.compare, "benchmarks": compare_summaries(summary, base)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    report = markdown_report(summary, base)
    atomic_write_text(out_dir / "summary.md", report)
    print(report)
    return summary


# -----------------------------------------------------------------------------
# grade: responses from elsewhere


def grade_file(args):
    import sample  # for read_jsonl

    def check(r):
        if not isinstance(r["response"], str):
            return f"'response' must be a string, got {type(r['response']).__name__}"
        if not isinstance(r["answer"], (str, int, float)):
            return f"'answer' must be a string or a number, got {type(r['answer']).__name__}"
        if args.agree and not isinstance(r.get(args.agree), bool):
            return f"the --agree field {args.agree!r} must be true or false"
        if args.tokens_field and not isinstance(r.get(args.tokens_field), (int, float)):
            return f"the --tokens-field {args.tokens_field!r} must be a number"

    try:
        rows = sample.read_jsonl(args.file, required=("response", "answer"), check=check)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if not rows:
        sys.exit(f"error: {args.file} has no responses (an empty file?)")
    # vLLM / OpenAI say finish_reason, sample.py says finish; "length" = cut at the token limit
    truncated = [r.get("finish", r.get("finish_reason")) == "length" for r in rows]
    tokens = None
    if args.tokens_field:
        tokens = [r[args.tokens_field] for r in rows]
    elif args.tokenizer:
        from transformers import AutoTokenizer
        if not Path(args.tokenizer).is_dir():
            sys.exit(f"error: --tokenizer {args.tokenizer} is not a directory (give a model directory)")
        try:
            tok = AutoTokenizer.from_pretrained(args.tokenizer)
        except (OSError, ValueError) as e:
            sys.exit(f"error: cannot load a tokenizer from {args.tokenizer}: {e}")
        tokens = [len(tok(r["response"], add_special_tokens=False)["input_ids"]) for r in rows]
    t0 = time.time()
    graded = grade_responses([r["response"] for r in rows], [str(r["answer"]) for r in rows],
                             workers=args.workers, truncated=truncated)
    seconds = time.time() - t0

    groups = defaultdict(list)  # per benchmark when the lines say which
    for i, r in enumerate(rows):
        groups[str(r.get("benchmark", r.get("bench", "all")))].append(i)
    for name, idx in groups.items():
        acc = _mean(graded[i]["correct"] for i in idx)
        line = f"grade: {name}: accuracy {100 * acc:.2f}% ({sum(graded[i]['correct'] for i in idx)}/{len(idx)})"
        if tokens:
            line += (f", mean tokens {_fmt(_mean(tokens[i] for i in idx))} (correct "
                     f"{_fmt(_mean(tokens[i] for i in idx if graded[i]['correct']))}, wrong "
                     f"{_fmt(_mean(tokens[i] for i in idx if not graded[i]['correct']))})")
        if any(truncated[i] for i in idx):
            line += f", cut at the limit {100 * _mean(truncated[i] for i in idx):.1f}%"
        if args.agree:
            differ = [i for i in idx if graded[i]["correct"] != rows[i][args.agree]]
            line += f", agreement with {args.agree} {100 * (1 - len(differ) / len(idx)):.2f}% ({len(differ)} differ)"
        print(line)
    errors = Counter(g["error"].split(":")[0] for g in graded if g["error"])
    print(f"grade: {len(rows)} responses graded in {seconds:.1f} s; grading errors (counted as wrong): "
          f"{dict(errors) or 'none'}")
    if args.agree:
        for i, r in enumerate(rows):
            if graded[i]["correct"] != r[args.agree]:
                print(f"  differs: line {i + 1} id {r.get('id')}: reference {r['answer']!r}, "
                      f"ours {graded[i]['correct']} pred {graded[i]['pred']!r}, {args.agree} {r[args.agree]}")
    if args.out:
        from model import atomic_write_text
        lines = []
        for i, (r, g) in enumerate(zip(rows, graded)):
            extra = {"correct": g["correct"], "pred": g["pred"]}
            if g["error"]:
                extra["grade_error"] = g["error"]
            if tokens and not args.tokens_field:
                extra["output_tokens"] = tokens[i]
            lines.append(json.dumps({**r, **extra}) + "\n")
        atomic_write_text(args.out, "".join(lines))  # --out may be the input file itself
        print(f"grade: wrote {args.out}")
    return graded


# -----------------------------------------------------------------------------


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:
        p = argparse.ArgumentParser(prog="evaluate.py grade", description="Grade existing responses.")
        p.add_argument("file", help="JSON Lines, each line with 'response' and 'answer'")
        p.add_argument("--out", help="write the lines back here with 'correct' and 'pred' added")
        p.add_argument("--agree", metavar="FIELD", help="report agreement with a boolean verdict field, "
                       "e.g. skythought_correct, and list the responses where it differs")
        p.add_argument("--tokenizer", help="count output tokens with this tokenizer (a model directory)")
        p.add_argument("--tokens-field", help="take output token counts from this field instead")
        p.add_argument("--workers", type=_positive, default=2, help="grading processes")
        return grade_file(p.parse_args(argv[1:]))

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (config.json, *.safetensors, tokenizer)")
    p.add_argument("--bench", default="gsm8k,math500,aime24,amc23",
                   help=f"comma-separated: {', '.join(BENCHMARKS)}, or paths of .jsonl files")
    p.add_argument("--protocol", choices=PROTOCOLS, default="tldr-paper")
    p.add_argument("--temperature", type=float, help="override the protocol's temperature")
    p.add_argument("--top-p", type=float, help="override the protocol's top_p")
    p.add_argument("--max-new-tokens", type=_positive, help="override the protocol's token limit")
    p.add_argument("--samples", type=_positive, help="samples per problem on every benchmark (default: the protocol's)")
    p.add_argument("--limit", type=_positive, help="only the first N problems of each benchmark (a quick look)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive, default=32, help="sequences decoded at once")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on cuda, else float32")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "bench"), help="benchmark files (default data/bench)")
    p.add_argument("--out-dir", help="default out/eval/<model name>-<protocol>")
    p.add_argument("--compare", metavar="BASE_SUMMARY", help="summary.json of a baseline run: adds the token "
                   "reduction and accuracy change")
    p.add_argument("--workers", type=_positive, default=2, help="grading processes")
    return run_evaluation(p.parse_args(argv))


if __name__ == "__main__":
    main()
