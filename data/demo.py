"""
The synthetic task of `make demo`: sums of small numbers, with easy and hard problems, written in the
files and chat format of the real recipe, plus a character-level tokenizer in the Hugging Face format.

    python data/demo.py --out out/demo/data --seed 0

A problem is a chain of one-digit additions and subtractions, "What is 8+9-3+7+6-2?"; the answer is a
non-negative integer (the running total never goes below 0). Easy problems have 2-3 numbers, hard ones
5-7. A tiny model can answer an easy problem at once, but needs to write the running total step by step
to get a hard one right: one step ("17-3=14") is a table lookup, the whole sum at once is not.

System-2 (long, R1-like) response: every step on its own line; after a step, a redundant re-check by
the inverse operation ("Wait, let me verify: 14+3=17. Yes.") with probability 1/2, a second one with
probability 1/4 -- a varying amount of verification, like R1's "wait" -- then the answer:

    8+9=17
    17-3=14
    Wait, let me verify: 14+3=17. Yes.
    14+7=21
    ...
    </think>

    \\boxed{25}

System-1 (short) response: the answer at once, "</think>\\n\\n\\boxed{25}".
A response is what the model writes after the prompt's "<think>\\n" (sample.example_ids appends EOS).

Files written to --out (JSON Lines):

| file               | rows                                     | used for                                          |
| ------------------ | ---------------------------------------- | ------------------------------------------------- |
| system1.jsonl      | easy problems, short responses           | System-1 data of TLDR and of the static mixture   |
| system2_seed.jsonl | easy and hard problems, long responses   | training the long model M_L from scratch          |
| short_seed.jsonl   | easy and hard problems, short responses  | training the short model M_S from scratch         |
| s2_problems.jsonl  | hard problems, no response               | sampling M_L to build the System-2 data           |
| dev.jsonl          | hard problems, with "answer"             | the bounds and the dev evaluations during TLDR    |
| test.jsonl         | easy and hard problems (half each)       | the final evaluation                              |
| tokenizer/         | tokenizer.json, tokenizer_config.json    | the models' tokenizer (one token per character)   |

Training rows are {"id", "problem", "response"}; evaluation rows {"id", "problem", "answer", "level"}.
No problem appears in two files: dev, test and s2_problems are held out from every training file.
Everything is a pure function of --seed.
"""

import argparse
import json
import random
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny  # noqa: E402

EASY_TERMS = (2, 3)          # numbers in an easy problem
HARD_TERMS = (5, 6)          # numbers in a hard problem
P_CHECK = 0.5                # chance of a re-check after a step
P_CHECK_AGAIN = 0.2          # chance of a second re-check after the first
CHECKS = ("Wait, let me verify: {}.", "Hmm, let me check again: {}.")

# one token per character: printable ASCII and the newline (the prompt's instruction sentence included)
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


def make_problem(rng: random.Random, level: str) -> list[tuple[str, int]]:
    """[(sign, number), ...]: the first sign is "+"; a "-" never takes the running total below 0."""
    n = rng.choice(EASY_TERMS if level == "easy" else HARD_TERMS)
    terms, total = [], 0
    for i in range(n):
        d = rng.randint(1, 9)
        sign = "+" if i == 0 or d > total or rng.random() < 0.5 else "-"
        total += d if sign == "+" else -d
        terms.append((sign, d))
    return terms


def problem_text(terms) -> str:
    expr = str(terms[0][1]) + "".join(f"{s}{d}" for s, d in terms[1:])
    return f"What is {expr}?"


def answer(terms) -> int:
    return sum(d if s == "+" else -d for s, d in terms)


def short_response(terms) -> str:
    return f"</think>\n\n\\boxed{{{answer(terms)}}}"


def long_response(terms, rng: random.Random) -> str:
    """Step-by-step running total with re-checks by the inverse operation, R1-style."""
    lines, total = [], terms[0][1]
    for s, d in terms[1:]:
        new = total + d if s == "+" else total - d
        lines.append(f"{total}{s}{d}={new}")
        inverse = f"{new}{'-' if s == '+' else '+'}{d}={total}"
        if rng.random() < P_CHECK:
            lines.append(CHECKS[0].format(inverse))
            if rng.random() < P_CHECK_AGAIN:
                lines.append(CHECKS[1].format(inverse))
        total = new
    return "\n".join(lines) + f"\n</think>\n\n\\boxed{{{total}}}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system1", type=int, default=4000, help="easy problems with short responses")
    p.add_argument("--system2_seed", type=int, default=20000, help="long traces to train the long model (half hard)")
    p.add_argument("--short_seed", type=int, default=20000, help="short answers to train the short model (half hard)")
    p.add_argument("--s2_problems", type=int, default=256, help="hard problems to sample the long model on")
    p.add_argument("--dev", type=int, default=128, help="hard dev problems")
    p.add_argument("--test", type=int, default=400, help="test problems, half easy and half hard")
    args = p.parse_args(argv)

    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seen = set()

    def fresh(level, held_out):
        """A new problem; held-out ones (evaluation, s2_problems) are never repeated anywhere."""
        while True:
            terms = make_problem(rng, level)
            text = problem_text(terms)
            if text not in seen:
                if held_out:
                    seen.add(text)
                return terms, text

    def write(name, rows):
        with open(out / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"{out / name}: {len(rows)} rows")

    # held-out sets first, so that the training sets can avoid them
    levels = ["easy", "hard"] * (args.test // 2) + ["hard"] * (args.test % 2)
    test = []
    for i, level in enumerate(levels):
        terms, text = fresh(level, True)
        test.append({"id": f"test-{i}", "problem": text, "answer": str(answer(terms)), "level": level})
    dev = []
    for i in range(args.dev):
        terms, text = fresh("hard", True)
        dev.append({"id": f"dev-{i}", "problem": text, "answer": str(answer(terms)), "level": "hard"})
    s2 = []
    for i in range(args.s2_problems):
        terms, text = fresh("hard", True)
        s2.append({"id": f"s2-{i}", "problem": text, "answer": str(answer(terms)), "level": "hard"})

    system1 = []
    for i in range(args.system1):
        terms, text = fresh("easy", False)
        system1.append({"id": f"s1-{i}", "problem": text, "response": short_response(terms)})
    system2_seed, short_seed = [], []
    for i in range(args.system2_seed):
        terms, text = fresh("hard" if i % 2 else "easy", False)
        system2_seed.append({"id": f"long-{i}", "problem": text, "response": long_response(terms, rng)})
    for i in range(args.short_seed):
        terms, text = fresh("hard" if i % 2 else "easy", False)
        short_seed.append({"id": f"short-{i}", "problem": text, "response": short_response(terms)})

    write("system1.jsonl", system1)
    write("system2_seed.jsonl", system2_seed)
    write("short_seed.jsonl", short_seed)
    write("s2_problems.jsonl", s2)
    write("dev.jsonl", dev)
    write("test.jsonl", test)
    tok = tiny.make_tokenizer(ALPHABET)
    tok.save_pretrained(out / "tokenizer")
    print(f"{out / 'tokenizer'}: {len(tok)} tokens")


if __name__ == "__main__":
    main()
