"""
Grade math answers: extract the final answer of a response and compare it with the reference answer.

    python grade.py responses.jsonl --out graded.jsonl                    # strict rules (the default)
    python grade.py responses.jsonl --rules skythought                    # the TLDR paper's rules
    python grade.py ../shared/data/r1_outputs/DS-R1-7B-TLDR_math500.jsonl --agree skythought_correct

Each line needs "response" and "answer"; --out writes every line back with "correct" and "pred" (the
extracted answer) added. A "finish" (sample.py) or "finish_reason" (vLLM, OpenAI) equal to "length" marks
a response cut at the token limit. From Python (what evaluate.py, train.py and data/build.py call):

    grade_responses(responses, answers, truncated=..., rules="strict")   # [{"correct", "pred", "error"}]

Two rule sets:

strict (the truthful grader; training, data construction and evaluate.py's main numbers use it)
- The final answer is the last \\boxed{} after "</think>" (the whole response if the model did not think).
  With several boxes, the boxes of one closing phrase are joined ("\\boxed{3}, \\boxed{5}, and \\boxed{7}"
  -> "3, 5, 7") when the reference lists several values, else the last box counts.
- Without a box after "</think>": the value of a finished closing sentence ("Therefore, the midpoint is
  (-1, 6).", "**Answer:** 18", a short answer's last line "So, 313.9 + 12.6 = 326.5"); and if that gives
  nothing either, the thinking's own final answer (its last box, or "the answer is X" in its last lines).
- A response cut at the token limit while still thinking has no answer: a number picked out of unfinished
  reasoning is not an answer. One cut after "</think>" keeps a box written there, else the thinking's answer.
- Plain numbers are compared as numbers (025 = 25, 10,\\!080 = 10080, $18.00 = 18); everything else by
  math-verify with the reference answer first (sets, intervals, matrices, LaTeX forms).

skythought (the rules behind the TLDR paper's numbers, from the SkyThought harness of its release): in
skythought.py. Use them to compare with the paper's table like for like.

Comparisons run in worker processes on both cores, each under a time limit enforced by the parent
(math-verify's own limit uses signal.alarm, which works only in the main thread): a stuck worker is killed
and replaced, and the response counts as wrong with error "timeout". This file imports neither torch nor
the model code: workers start in a fraction of a second.
"""

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict, deque
from fractions import Fraction
from pathlib import Path

from common import (ANSWER, NUMBER, TEXT, ArgumentParser, atomic_write, check_outputs, check_settings, jsonl_text,
                    read_jsonl, run)
from skythought import skythought_extract, skythought_match

ROOT = Path(__file__).resolve().parent
RULES = ("strict", "skythought")
GRADE_TIMEOUT = 5.0  # seconds for one comparison; normal ones take milliseconds

# -----------------------------------------------------------------------------
# Answer extraction (strict)


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
# "\boxed{", "\fbox{", "\boxed 5", and "boxed{" with its backslash lost
_BOX = re.compile(r"\\(?:boxed|fbox)\s*|(?<![\\A-Za-z])boxed(?=\{)")


def _boxes(text):
    """The top-level boxes in text as (start, end, content). A box left open by a response that was cut
    inside it is not an answer."""
    pairs, out, end = _brace_pairs(text), [], -1
    for m in _BOX.finditer(text):
        if m.start() < end:  # inside the previous box, e.g. \boxed{\boxed{5}}
            continue
        i = m.end()
        if i < len(text) and text[i] == "{":
            if i in pairs:
                out.append((m.start(), pairs[i] + 1, text[i + 1:pairs[i]].strip()))
                end = pairs[i] + 1
        elif text[m.start()] == "\\":  # "\boxed 5"
            word = _WORD.match(text, i)
            if word:
                out.append((m.start(), word.end(), word.group()))
                end = word.end()
    return [b for b in out if b[2]]


def _boxed_answer(text, several):
    """The last box of text; with `several` (the reference lists several values), the boxes of the closing
    phrase joined: "\\boxed{-2} and \\boxed{1}" -> "-2, 1". None without a box."""
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    while several and len(group) < len(boxes):
        b = boxes[-len(group) - 1]
        gap = text[b[1]:group[0][0]]
        if len(gap) > 40 or "\n\n" in gap or re.search(r"[.!?:]\s", gap):
            break
        group.insert(0, b)
    return ", ".join(dict.fromkeys(b[2] for b in group))


# A "closing sentence" candidate value: inline or display math, or a plain number / fraction.
_MATH_SPAN = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|\$(?!\s)([^$]+?)(?<!\s)\$(?!\d)", re.S)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?")
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?'*")  # "\( x \)" names a quantity, it is not a value
_VALUE = r"(-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?)"
_ANNOUNCED = re.compile(r"answer\W*(?:is\W*)?" + _VALUE + r"[.*\s]*$", re.I)
_EQUATION_END = re.compile(r"=\s*" + _VALUE + r"\s*$")
_THOUGHT_ANSWER = re.compile(r"answer\s+(?:is|should be|would be|must be)\s*:?\s*(?:\*\*)?\s*"
                             r"(\\\(.+?\\\)|\$[^$]+\$|-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)", re.I)
SHORT_ANSWER = 2000  # characters: a complete answer this short may end on "... = X" without a full stop


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
    announced = _ANNOUNCED.search(lines[-1][-200:])
    if announced:
        return announced.group(1)
    # a short answer whose last line is a finished computation: "So, 313.9 + 12.6 = 326.5"
    equation = _EQUATION_END.search(lines[-1][-200:])
    if equation and len(text) <= SHORT_ANSWER:
        return equation.group(1)
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


def _thinking_answer(thinking, several):
    """The final answer a finished thinking committed to: its last box, or "the answer is X" in its last
    lines ("So, the answer should be 3.")."""
    boxed = _boxed_answer(thinking, several)
    if boxed is not None:
        return boxed
    tail = "\n".join(thinking.rstrip().splitlines()[-3:])[-600:]
    found = _THOUGHT_ANSWER.findall(tail)
    if not found:
        return None
    value = found[-1].strip()
    return re.sub(r"^(?:\\\(|\$)\s*|\s*(?:\\\)|\$)$", "", value) or None


def extract_answer(response, truncated=False, several=False):
    """The text of the final answer of a response, or None. truncated: the response was cut at the token
    limit. several: the reference answer lists several values (then the boxes of one phrase are joined)."""
    if not isinstance(response, str):  # e.g. null from a harness whose request failed
        return None
    if "</think>" not in response:
        if truncated:
            return None  # cut while still thinking
        return _boxed_answer(response, several) or _closing_answer(response)  # a model that did not think
    thinking, _, summary = response.rpartition("</think>")
    answer = _boxed_answer(summary, several)
    if answer is None and not truncated:
        answer = _closing_answer(summary)
    # the summary after </think> gave nothing (often: it was cut by the token limit): the thinking ended,
    # so the answer it ended on is the model's answer
    return answer if answer is not None else _thinking_answer(thinking, several)


# -----------------------------------------------------------------------------
# Answer comparison (strict)


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


def lists_several(gold):
    """Whether a reference answer lists several values ("3, 5, 7", "1,-2", "3 \\pm 2\\sqrt{2}"), as opposed
    to one value (a number, "(3, \\frac{\\pi}{2})", "x \\in [-2,7]")."""
    if _plain_number(gold) is not None:
        return False
    if re.search(r"\\[pm]p\b|\\pm|\\mp", gold):
        return True
    depth = 0
    for i, c in enumerate(gold):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0 and not gold[i - 1:i] == "\\":
            return True
    return False


def _math_verify():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    return parse, verify, [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _parse(text):
    # timeouts disabled: the parent process enforces the time limit (math-verify would use signals)
    parse, _, config = _math_verify()
    return parse("$" + text + "$", extraction_config=config, parsing_timeout=None)


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
        if _math_verify()[1](gold_parsed, _parse(pred), timeout_seconds=None):
            return True
    return False


# -----------------------------------------------------------------------------
# Parallel grading with a time limit enforced from the parent


def _grade_worker():
    """A grading worker process: reads [rules, pred, gold] jobs as JSON lines on stdin and answers each
    with [correct, error]. Started by grade_responses with `python -c`."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to answer: it ends the workers
    logging.disable(logging.WARNING)  # math-verify warns that its own timeouts are off: we have ours
    warnings.simplefilter("ignore")  # and sympy's deprecation notes are noise here
    _math_verify()  # import it before saying ready, so that no job pays for it
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        rules, pred, gold = json.loads(line)
        try:
            if rules == "strict":
                result = [bool(answers_match(pred, gold)), None]
            else:
                result = [bool(skythought_match(pred, gold, gsm8k=rules == "skythought-gsm8k")), None]
        except Exception as e:
            result = [False, f"exception: {type(e).__name__}: {e}"[:300]]
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


class _Worker:
    def __init__(self):
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import grade; grade._grade_worker()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready, self.job, self.deadline = False, None, None

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def grade_responses(responses, answers, workers=2, timeout=GRADE_TIMEOUT, truncated=None, rules="strict",
                    gsm8k=False):
    """Grade responses against reference answers. Returns per response
    {"correct": bool, "pred": str | None, "error": None | "timeout" | "exception: ..."}.
    truncated: per response, whether it was cut at the token limit (strict rules only; SkyThought ignores it).
    gsm8k: the responses answer GSM8K (one bool, or one per response), which the paper's rules grade apart.
    Runs on `workers` processes; each comparison gets `timeout` seconds, enforced from here by killing
    and replacing a stuck worker, so it works from any thread. Never raises on bad text."""
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    if rules not in RULES:
        raise ValueError(f"rules={rules!r}: use one of {', '.join(RULES)}")
    answers = [str(a) for a in answers]
    truncated = truncated or [False] * len(responses)
    gsm8k = gsm8k if isinstance(gsm8k, (list, tuple)) else [gsm8k] * len(responses)
    if rules == "strict":
        preds = [extract_answer(r, t, lists_several(a)) for r, t, a in zip(responses, truncated, answers)]
        kinds = ["strict"] * len(responses)
    else:
        preds = [skythought_extract(r) for r in responses]
        kinds = ["skythought-gsm8k" if g else "skythought" for g in gsm8k]
    results = [{"correct": False, "pred": p, "error": None} for p in preds]
    # identical (pred, reference) pairs are compared once: samples of one problem often agree
    jobs = defaultdict(list)
    for i, (p, a, kind) in enumerate(zip(preds, answers, kinds)):
        if p is not None:
            jobs[(kind, p, a)].append(i)
    for job, (correct, error) in compare(list(jobs), workers, timeout).items():
        for i in jobs[job]:
            results[i]["correct"], results[i]["error"] = correct, error
    return results


# the workers stay for the next call in this process (an evaluation grades each benchmark twice: a worker's start,
# importing sympy and math-verify, costs seconds); one call at a time
_pool, _pool_lock = [], threading.Lock()


def compare(jobs: list, workers: int, timeout: float) -> dict:
    """{job: [correct, error]} for (rules, pred, gold) jobs, run by the worker processes, each job under the
    time limit: a worker that passes it (or dies) is killed and replaced, and its job counts as wrong."""
    if not jobs:
        return {}
    keep = max(1, workers)
    with _pool_lock:
        for w in _pool[keep:]:  # (a call with fewer workers than the last)
            w.kill()
        _pool[:] = [w for w in _pool[:keep] if w.proc.poll() is None]  # (one that died since is replaced)
        # a worker's start costs about a second of CPU, the time of some 500 usual jobs: one more per 500 jobs
        _pool.extend(_Worker() for _ in range(min(keep, 1 + len(jobs) // 500) - len(_pool)))
        try:
            return run_jobs(_pool, jobs, timeout)
        except BaseException:  # (an interrupt: a worker may still hold a job) the next call starts afresh
            for w in _pool:
                w.kill()
            _pool.clear()
            raise


def run_jobs(pool: list, jobs: list, timeout: float) -> dict:
    """The jobs handed out to the pool's idle workers as they finish; a stuck or dead worker is replaced in it."""
    outcomes, todo = {}, deque(jobs)
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
            outcomes[w.job], w.job = outcome, None
            if replace:  # stuck or dead: a fresh worker takes its place
                w.kill()
                pool[k] = _Worker()
        if not busy and not readable and not any(w.ready for w in pool):
            raise RuntimeError("grading workers did not start within 60 s")
    return outcomes


# -----------------------------------------------------------------------------
# The command line: grade a file of responses made anywhere (sample.py, vLLM, another harness)


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None



def read_responses(path, agree=None, tokens_field=None):
    types = {"response": TEXT, "answer": ANSWER, **({agree: bool} if agree else {}),
             **({tokens_field: NUMBER} if tokens_field else {})}
    return read_jsonl(path, required=("response", "answer", *filter(None, (agree, tokens_field))), types=types)


def count_tokens(rows, tokenizer):
    from transformers import AutoTokenizer
    if not Path(tokenizer).is_dir():
        sys.exit(f"error: --tokenizer {tokenizer} is not a directory (give a model directory)")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot load a tokenizer from {tokenizer}: {e}")
    return [len(tok(r["response"], add_special_tokens=False)["input_ids"]) for r in rows]


def print_summary(rows, graded, truncated, tokens, agree, seconds):
    groups = defaultdict(list)  # per benchmark when the lines say which
    for i, r in enumerate(rows):
        groups[str(r.get("benchmark", r.get("bench", "all")))].append(i)
    for name, idx in groups.items():
        n_correct = sum(graded[i]["correct"] for i in idx)
        line = f"grade: {name}: accuracy {100 * n_correct / len(idx):.2f}% ({n_correct}/{len(idx)})"
        if tokens:
            line += (f", mean tokens {_mean(tokens[i] for i in idx):.0f} (correct "
                     f"{_mean(tokens[i] for i in idx if graded[i]['correct']) or 0:.0f}, wrong "
                     f"{_mean(tokens[i] for i in idx if not graded[i]['correct']) or 0:.0f})")
        if any(truncated[i] for i in idx):
            line += f", cut at the limit {100 * _mean(truncated[i] for i in idx):.1f}%"
        if agree:
            differ = [i for i in idx if graded[i]["correct"] != rows[i][agree]]
            line += f", agreement with {agree} {100 * (1 - len(differ) / len(idx)):.2f}% ({len(differ)} differ)"
        print(line)
    errors = Counter(g["error"].split(":")[0] for g in graded if g["error"])
    print(f"grade: {len(rows)} responses graded in {seconds:.1f} s; grading errors (counted as wrong): "
          f"{dict(errors) or 'none'}")
    if agree:
        for i, r in enumerate(rows):
            if graded[i]["correct"] != r[agree]:
                print(f"  differs: line {i + 1} id {r.get('id')}: reference {r['answer']!r}, "
                      f"ours {graded[i]['correct']} pred {graded[i]['pred']!r}, {agree} {r[agree]}")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the top of grade.py for the rules.")
    p.add_argument("file", help="JSON Lines, each line with 'response' and 'answer'")
    p.add_argument("--out", help="write the lines back here with 'correct' and 'pred' added")
    p.add_argument("--rules", choices=RULES, default="strict",
                   help="strict (default), or skythought: the TLDR paper's harness")
    p.add_argument("--agree", metavar="FIELD", help="report agreement with a boolean verdict field, "
                   "e.g. skythought_correct, and list the responses where it differs")
    p.add_argument("--tokenizer", help="count output tokens with this tokenizer (a model directory)")
    p.add_argument("--tokens_field", help="take output token counts from this field instead")
    p.add_argument("--workers", type=int, default=2, help="grading processes")
    args = p.parse_args(argv)
    check_settings(vars(args))
    if args.out and not Path(args.out).resolve().parent.is_dir():  # fail now, not after the grading
        sys.exit(f"error: --out {args.out}: the folder {Path(args.out).resolve().parent} does not exist")
    check_outputs({"--out": args.out}, {"the file": args.file})
    try:
        rows = read_responses(args.file, args.agree, args.tokens_field)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if not rows:
        sys.exit(f"error: {args.file} has no responses (an empty file?)")
    truncated = [r.get("finish", r.get("finish_reason")) == "length" for r in rows]
    tokens = [r[args.tokens_field] for r in rows] if args.tokens_field else \
        count_tokens(rows, args.tokenizer) if args.tokenizer else None
    t0 = time.time()
    # the paper's rules grade GSM8K apart: lines say their benchmark, else the file's name tells
    gsm8k = [("gsm8k" in str(r.get("benchmark", r.get("bench", Path(args.file).name))).lower()) for r in rows]
    graded = grade_responses([r["response"] for r in rows], [r["answer"] for r in rows],
                             workers=args.workers, truncated=truncated, rules=args.rules, gsm8k=gsm8k)
    print_summary(rows, graded, truncated, tokens, args.agree, time.time() - t0)
    if args.out:
        lines = []
        for i, (r, g) in enumerate(zip(rows, graded)):
            extra = {"correct": g["correct"], "pred": g["pred"]}
            if g["error"]:
                extra["grade_error"] = g["error"]
            if tokens and not args.tokens_field:
                extra["output_tokens"] = tokens[i]
            lines.append({**r, **extra})
        atomic_write(args.out, jsonl_text(lines))
        print(f"grade: wrote {args.out}")
    return graded


if __name__ == "__main__":
    run(main, "nothing half-written is kept (--out is written whole at the end); run the same command again")
