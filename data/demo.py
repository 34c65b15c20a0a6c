"""
The synthetic task of `make demo`: sums of one-digit numbers with easy and hard problems, written in the
files and chat format of the real recipe, plus a character-level tokenizer in the Hugging Face format.

    python data/demo.py --out_dir out/demo/data --seed 0

Problems. An easy problem is one addition or subtraction, "What is 7-3?". A hard problem is a chain of
5 or 6 one-digit numbers, "What is 7+1-6-2+9?", whose running total stays within 0..9 and in which no
number occurs twice. Answers are the integers 0..9. A tiny model recalls an easy answer at once,
but gets a hard one right only by writing the running total down step by step; each step is an easy
problem.

Responses are what the model writes after the prompt's "<think>\n" (prompts.example_ids appends EOS):

- System-2 (long, R1-like): one line per step, then 0 to 3 redundant re-checks of the whole chain,
  drawn uniformly per trace (the varying amount of R1's "wait, let me verify"); sampling the long model
  several times and keeping the shortest correct answer (TLDR's System-2 data) finds traces that
  re-check little:

      7+1=8
      8-6=2
      2-2=0
      0+9=9
      Wait, let me verify: 7+1=8, 8-6=2, 2-2=0, 0+9=9.
      Let me check again: 7+1=8, 8-6=2, 2-2=0, 0+9=9.
      </think>

      \boxed{9}

- System-1 (short CoT), easy problems only: the one step and the answer, "7-3=4\n</think>\n\n\boxed{4}".
- The short model M_S answers every problem in one line, "7-3=4\n</think>\n\n\boxed{4}" or
  "7+1-6-2+9=9\n</think>\n\n\boxed{9}": right on easy problems (for them this line is the System-1
  answer) and mostly wrong on hard ones, as Qwen2.5-Instruct is on AIME next to R1.

Why this shape (measured with a 0.46M-parameter Qwen2 model, 1000 AdamW steps of 32 examples): with
re-checks after each step, or re-checks of single steps, the model lost its place in the chain (took
the wrong next number) or ended it at the wrong step; with repeated numbers in a problem it also took
the wrong next number; running totals above 9 added arithmetic errors. A contiguous chain of distinct
numbers, whole-chain re-checks and totals within 0..9 reach 99-100% on hard test problems.

Files written to --out (JSON Lines; training rows {"id", "problem", "response"}, evaluation rows
{"id", "problem", "answer", "level"}):

| file               | rows                                          | used for                                |
| ------------------ | --------------------------------------------- | --------------------------------------- |
| system1.jsonl      | every easy problem once (81), short CoT       | System-1 data (TLDR, static mixture)    |
| system2_seed.jsonl | 1/4 easy, 3/4 hard problems, long traces      | training the long model M_L             |
| short_seed.jsonl   | 1/2 easy, 1/2 hard problems, one-line answers | training the short model M_S            |
| s2_problems.jsonl  | hard problems (with "answer", no response)    | sampling M_L for the System-2 data      |
| dev.jsonl          | hard problems                                 | the bounds, dev evaluations of TLDR     |
| test.jsonl         | easy and hard problems                        | the final evaluation                    |
| tokenizer/         | tokenizer.json, tokenizer_config.json         | one token per character, R1 format,     |
|                    |                                               | no instruction sentence in prompts      |

The hard problems of dev, test and s2_problems are distinct and never in a training file. Easy
problems cannot be held out: there are only 81 of them (like a times table), all in system1.jsonl.
Everything is a pure function of --seed.
"""

import random
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ArgumentParser, at_least, atomic_write, between, check_settings, jsonl_text, run  # noqa: E402

MAX_TOTAL = 9                           # answers and running totals stay within 0..MAX_TOTAL
HARD_TERMS = (5, 6)                     # numbers in a hard problem
N_CHECKS = (0, 1, 2, 3)                 # re-checks of the whole chain in a long trace, drawn uniformly
CHECKS = ("Wait, let me verify: {}.", "Let me check again: {}.", "Hmm, once more: {}.")

# one token per character: printable ASCII and the newline
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


def easy_problems():
    """Every easy problem, as [(sign, number), ...]: a +- d = r with a in 1..MAX_TOTAL, d in 1..9."""
    return [[("+", a), (s, d)] for a in range(1, MAX_TOTAL + 1) for s in "+-" for d in range(1, 10)
            if 0 <= (a + d if s == "+" else a - d) <= MAX_TOTAL]


def hard_problem(rng: random.Random):
    """[(sign, number), ...] with distinct one-digit numbers (so "the number after 6" is unambiguous) and
    a running total within 0..MAX_TOTAL."""
    n = rng.choice(HARD_TERMS)
    while True:
        terms = [("+", rng.randint(1, 9))]
        total, used = terms[0][1], {terms[0][1]}
        while len(terms) < n:
            sign = rng.choice("+-")
            room = MAX_TOTAL - total if sign == "+" else total
            choices = [d for d in range(1, min(9, room) + 1) if d not in used]
            if not choices:
                break  # stuck: draw the problem again
            d = rng.choice(choices)
            total += d if sign == "+" else -d
            terms.append((sign, d))
            used.add(d)
        if len(terms) == n:
            return terms


def expression(terms) -> str:
    return str(terms[0][1]) + "".join(f"{s}{d}" for s, d in terms[1:])


def problem_text(terms) -> str:
    return f"What is {expression(terms)}?"


def answer(terms) -> int:
    return sum(d if s == "+" else -d for s, d in terms)


def steps(terms):
    """The running total, one step per number after the first: ["8+1=9", "9-6=3", ...]."""
    out, total = [], terms[0][1]
    for s, d in terms[1:]:
        new = total + d if s == "+" else total - d
        out.append(f"{total}{s}{d}={new}")
        total = new
    return out


def final(terms) -> str:
    return f"</think>\n\n\\boxed{{{answer(terms)}}}"


def short_response(terms) -> str:
    """The whole sum in one line: for an easy problem that is its one step (System-1 short CoT), for a
    hard one a guess (the short model)."""
    return f"{expression(terms)}={answer(terms)}\n" + final(terms)


def long_response(terms, rng: random.Random) -> str:
    """The steps, then 0-3 re-checks of the whole chain (as many as the trace's draw says)."""
    chain = steps(terms)
    checks = [CHECKS[i].format(", ".join(chain)) for i in range(rng.choice(N_CHECKS))]
    return "\n".join(chain + checks) + "\n" + final(terms)


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", required=True, help="output directory of the data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system2_seed", type=int, default=20000, help="long traces to train the long model")
    p.add_argument("--short_seed", type=int, default=20000, help="one-line answers to train the short model")
    p.add_argument("--s2_problems", type=int, default=256, help="hard problems to sample the long model on")
    p.add_argument("--dev_problems", type=int, default=128, help="hard dev problems")
    p.add_argument("--test_easy", type=int, default=64)
    p.add_argument("--test_hard", type=int, default=256)
    args = p.parse_args(argv)
    check_settings(vars(args), {"seed": at_least(0), "test_easy": between(1, len(easy_problems())),
                                **{k: at_least(1) for k in ("system2_seed", "short_seed", "s2_problems", "dev_problems",
                                                            "test_hard")}})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in make_sets(args).items():
        atomic_write(out / f"{name}.jsonl", jsonl_text(rows))
        print(f"{out / name}.jsonl: {len(rows)} rows")
    tok = tiny.make_tokenizer(ALPHABET)
    # prompts without R1's instruction sentence (prompts.prompt_text reads this): a tiny model learns nothing from
    # it, and it would make the examples 1.6-2.7x longer
    tok.init_kwargs["prompt_instruction"] = ""
    tok.save_pretrained(out / "tokenizer")
    print(f"{out / 'tokenizer'}: {len(tok)} tokens")


def make_sets(args) -> dict:
    """Every data set of the demo, a pure function of args.seed: {file name: rows}."""
    rng = random.Random(args.seed)
    easy = easy_problems()
    held_out = set()

    def fresh_hard():
        """A hard problem never drawn for an evaluation or sampling set."""
        while True:
            terms = hard_problem(rng)
            if problem_text(terms) not in held_out:
                return terms

    def eval_rows(prefix, problems, level):
        rows = []
        for i, terms in enumerate(problems):
            held_out.add(problem_text(terms))
            rows.append({"id": f"{prefix}-{i}", "problem": problem_text(terms), "answer": str(answer(terms)),
                         "level": level})
        return rows

    def train_rows(prefix, problems, respond):
        return [{"id": f"{prefix}-{i}", "problem": problem_text(t), "response": respond(t)}
                for i, t in enumerate(problems)]

    # held-out sets first, so that the training sets can avoid them
    test = eval_rows("test-easy", rng.sample(easy, args.test_easy), "easy") + \
        eval_rows("test-hard", [fresh_hard() for _ in range(args.test_hard)], "hard")
    rng.shuffle(test)
    dev = eval_rows("dev", [fresh_hard() for _ in range(args.dev_problems)], "hard")
    s2 = eval_rows("s2", [fresh_hard() for _ in range(args.s2_problems)], "hard")

    system1 = train_rows("s1", easy, short_response)
    # 3/4 hard: the long model needs most of its steps on how to walk along a long chain
    long_problems = [fresh_hard() if i % 4 else rng.choice(easy) for i in range(args.system2_seed)]
    system2_seed = train_rows("long", long_problems, lambda t: long_response(t, rng))
    short_problems = [fresh_hard() if i % 2 else rng.choice(easy) for i in range(args.short_seed)]
    short_seed = train_rows("short", short_problems, short_response)
    return {"system1": system1, "system2_seed": system2_seed, "short_seed": short_seed, "s2_problems": s2,
            "dev": dev, "test": test}


if __name__ == "__main__":
    run(main, "its files are written whole or not at all; run the same command again")
