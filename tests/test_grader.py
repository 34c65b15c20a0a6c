"""grade.py: answer extraction and comparison under both rule sets, time limits, the CLI; evaluate.py's metrics."""
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import evaluate as E
import grade as G
import skythought

# -----------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize("response, want", [
    # the last box after </think>; boxes inside the thinking do not count
    ("Maybe \\boxed{3}? Let me check.</think>\n\nThe answer is \\boxed{5}.", "5"),
    ("\\boxed{1}</think>First \\boxed{2}.\n\nSo finally \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    # no think block at all (a model that answers directly): the whole response
    ("2 + 2 = 4, so the answer is \\boxed{4}.", "4"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are not delimiters
    ("\\fbox{7}", "7"),
    ("\\boxed 7", "7"),
    ("\\boxed{\\boxed{6}}", "\\boxed{6}"),
    ("First \\boxed{3}.\n\nOn reflection the answer is \\boxed{4}.", "4"),
    ("Thus the integers are \\boxed{-2} and \\boxed{1}.", "1"),  # one value asked for: the last box
    # no box: the value of a finished closing sentence
    ("Therefore, the midpoint of the segment is \\((-1, 6)\\).", "(-1, 6)"),
    ("Thus, there are 8 integer values of \\( t \\) that satisfy the condition.", "8"),
    ("So, Shawna is 9 years old and her father is 45 years old.", "45"),
    ("Thus, the total amount James made is:\n\n$17,500", "$17,500"),
    ("The sum is\n\\[\nx = 12\n\\]", "x = 12"),
    ("</think>\n\n**Final Answer**\n18", "18"),
    ("So she pays 3 * 6 = 18 dollars.\n\n**Answer:** 18", "18"),
    ("The final answer is 1,250", "1,250"),
    ("Let me check the answer 24 again", None),
    # unfinished text yields nothing, whatever numbers it contains
    ("So, s = 142/231\n\nThen, t = -2.5 + 6.25*(142/231)\n\nCompute", None),
    ("The smallest positive value of \\( c \\) is \\( \\pi \\),", None),
    ("Let me compute \\boxed{12", None),
    ("", None),
    ("</think>", None),
])
def test_extract_answer(response, want):
    assert G.extract_answer(response) == want


@pytest.mark.parametrize("response, want", [
    # when the reference lists several values, the boxes of one closing phrase form one answer
    ("Thus the integers are \\boxed{-2} and \\boxed{1}.", "-2, 1"),
    ("\\[ \\boxed{3 + 2\\sqrt{2}} \\quad \\text{and} \\quad \\boxed{3 - 2\\sqrt{2}} \\]",
     "3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}"),
    ("\\boxed{5} and \\boxed{5}", "5"),
    ("First \\boxed{3}.\n\nOn reflection the answers are \\boxed{4}, \\boxed{6}.", "4, 6"),
])
def test_boxes_of_one_phrase_are_joined_for_several_values(response, want):
    assert G.extract_answer(response, several=True) == want


@pytest.mark.parametrize("gold, several", [("3, 5, 7", True), ("1,-2", True), ("3 \\pm 2 \\sqrt{2}", True),
                                           ("1,000", False), ("(3, \\frac{\\pi}{2})", False), ("x \\in [-2,7]", False),
                                           ("\\{1, 2\\}", False), ("18", False), ("\\text{(C)}", False)])
def test_references_that_list_several_values(gold, several):
    assert G.lists_several(gold) == several


def test_truncated_responses_only_count_a_box_after_think():
    thinking = "Let me see, 3 * 4 = 12, so maybe \\boxed{12}. Wait, let me check again."
    assert G.extract_answer(thinking) == "12"  # a finished response without think block
    assert G.extract_answer(thinking, truncated=True) is None  # cut while thinking
    summary = "So it is 12.</think>\n\nThe answer is 12."
    assert G.extract_answer(summary) == "12"
    assert G.extract_answer(summary, truncated=True) is None  # cut before committing to a box
    assert G.extract_answer(summary + " \\boxed{12}", truncated=True) == "12"


@pytest.mark.parametrize("text", ["\\boxed{" * 100_000, "{" * 100_000 + "\\boxed{5}", "\\( " * 200_000 + ".",
                                  "\\[ " * 200_000 + ".", " " * 300_000 + "x.", "\\boxed " * 50_000,
                                  "5 " + "ab" * 20_000 + "!"])
def test_extraction_is_fast_on_garbage(text):
    t = time.time()
    G.extract_answer(text)
    assert time.time() - t < 2


# -----------------------------------------------------------------------------
# comparison


@pytest.mark.parametrize("pred, gold", [
    ("25", "025"), ("025", "25"),                                  # AIME answers with leading zeros
    ("10080", "10,\\!080"), ("10{,}080", "10080"), ("1,000", "1000"), ("\\$32,348", "\\$32,\\!348"),
    ("\\$18.00", "18"), ("18 \\text{ dollars}", "18"), ("18\\%", "18"), ("50\\%", "0.5"), ("36", "36.0"),
    ("90", "90^\\circ"), ("5.4", "5.4 \\text{ cents}"), ("-3", "-3"),
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac{1}{2}"), ("\\frac34", "\\dfrac{3}{4}"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("x = 5", "5"), ("(x+1)^2", "x^2+2x+1"), ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}"),
    ("-2, 1", "1,-2"), ("3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}", "3 \\pm 2 \\sqrt{2}"), ("[-2, 7]", "x \\in [-2,7]"),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("4210_5", "4210_{5}"),
    ("\\begin{pmatrix}-7\\\\16\\\\5\\end{pmatrix}", "\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}"),
    ("C", "\\text{(C)}"), ("Evelyn", "\\text{Evelyn}"),
    ("\\arcsin(-\\frac{1}{2}) = -\\frac{\\pi}{6}", "-\\frac{\\pi}{6}"),
    ("81", "080 or 081 (both were accepted)"), ("80", "080 or 081 (both were accepted)"),
])
def test_equal_answers(pred, gold):
    assert G.answers_match(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("24", "25"), ("3", "-3"), ("1,2", "12"), ("0.25", "025"), ("2, 3", "2"), ("(1,2)", "(2,1)"),
    ("82", "080 or 081 (both were accepted)"), ("x^2", "x^3"), ("\\text{west}", "\\text{east}"),
])
def test_different_answers(pred, gold):
    assert not G.answers_match(pred, gold)


def test_skythought_misses_kept_as_cases():
    # responses from ../shared/data/r1_outputs (shortened) that SkyThought graded wrong and we grade right
    cases = [
        ("...so there are $7! \\times 2! = 10080$ ways: \\(\\boxed{10080}\\).", "10,\\!080"),      # math500-172
        ("Thus, the roots of the equation are \\(\\boxed{3}\\), \\(\\boxed{5}\\), and \\(\\boxed{7}\\).",
         "3, 5, 7"),                                                                                 # 33
        ("\\[\n\\boxed{\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}}\n\\]",
         "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"),                                        # 486
        ("Therefore, the polar coordinates are \\((3, \\frac{\\pi}{2})\\).",
         "\\left( 3, \\frac{\\pi}{2} \\right)"),                                                 # 72
    ]
    results = G.grade_responses([r for r, _ in cases], [a for _, a in cases])
    assert [r["correct"] for r in results] == [True] * len(cases)
    paper = G.grade_responses([r for r, _ in cases], [a for _, a in cases], rules="skythought")
    assert [r["correct"] for r in paper] == [False] * len(cases)


# The classes of responses on which the strict grader and SkyThought disagreed (issue 13), each graded by both
# rule sets: (response, reference, cut at the token limit, strict verdict, strict pred, paper's verdict).
CLASSES = [
    # the thinking ended on its final answer and the summary after </think> was cut by the token limit
    # (math500-89 of ../shared/data/r1_outputs, shortened): the model had answered
    ("...the smallest positive value is \\(\\boxed{\\pi}\\).\n</think>\n\n5. **Conclusion**:\n"
     "   - The smallest positive value of \\( c \\) that represents the same graph is \\( \\pi \\),",
     "\\pi", False, True, "\\pi", True),
    ("... so the count is 1.\n\n**Final Answer**\n\\boxed{1}.</think>\n\nTo solve the problem, we first", "1", True,
     True, "1", True),
    ("Adding them gives 3. So, the answer should be 3.</think>\n\n**Step 1: Set up", "3", True, True, "3", False),
    # ... but a response cut while still thinking has no answer, whatever number it was on
    ("Let me compute: 3 * 4 = 12. Then we still need to add the", "12", True, False, None, True),
    # "boxed{83}" with its backslash lost, on the last line of a plain answer
    ("The two numbers add up to 83.\nboxed{83}", "83", False, True, "83", True),
    # a short complete answer whose last line is a finished computation without a full stop
    ("He spends 313.9 on food and 12.6 on drinks.\nSo, 313.9 + 12.6 = 326.5", "326.5", False, True, "326.5", True),
    # two boxes where the question asks for the second: the last box counts ...
    ("The area is \\boxed{15\\sqrt{3}}, so m + n = \\boxed{18}", "18", False, True, "18", True),
    # ... but the boxes of one phrase are joined when the reference lists several values
    ("The roots are \\boxed{3}, \\boxed{5}, and \\boxed{7}.", "3, 5, 7", False, True, "3, 5, 7", False),
    ("\\[ \\boxed{3 + 2\\sqrt{2}} \\quad \\text{and} \\quad \\boxed{3 - 2\\sqrt{2}} \\]", "3 \\pm 2 \\sqrt{2}", False,
     True, "3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}", False),
]


@pytest.mark.parametrize("response, gold, cut, strict, pred, paper", CLASSES)
def test_disagreement_classes_under_both_rule_sets(response, gold, cut, strict, pred, paper):
    got = G.grade_responses([response], [gold], truncated=[cut])[0]
    assert (got["correct"], got["pred"]) == (strict, pred)
    assert G.grade_responses([response], [gold], truncated=[cut], rules="skythought")[0]["correct"] == paper


@pytest.mark.parametrize("raw, normalized", [
    ("1,000", "0,1"), ("3,1,2", "1,2,3"), ("025", "25"), ("\\frac12", "\\frac{1}{2}"),
    ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("3/4", "\\frac{3}{4}"), ("\\text{two}", "2"), ("5\\text{ cm}", "5"), ("x = 5", "5"), ("18.00", "18"),
    ("90^\\circ", "90"), ("\\$18", "18"), ("50\\%", "50"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\sqrt2", "\\sqrt{2}"), (".5", "0.5"), ("\\text{Evelyn}", "Evelyn"),
])
def test_paper_rules_normalize_as_skythought_does(raw, normalized):
    assert skythought.skythought_normalize(raw) == normalized


@pytest.mark.parametrize("response, pred", [
    ("First \\boxed{2}</think> so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # the last box anywhere
    ("<think>\\boxed{7}, wait</think>The answer is 9", "7"),                   # a box beats "the answer is"
    ("So the answer is 42.", "42"), ("Hence the final answer is 17", "17"),
    ("We get 1,234 and then -3.5 more", "-3.5"), ("no numbers here", ""),
    ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}"),                                   # unbalanced: to the end
])
def test_paper_rules_extract_as_skythought_does(response, pred):
    assert skythought.skythought_extract(response) == pred


@pytest.mark.parametrize("pred, gold, gsm8k, want", [
    ("25", "025", False, True), ("0.25", "25", False, True), ("2500", "25", False, True),  # percent forms
    ("24", "25", False, False), ("\\frac{1}{2}", "0.5", False, True), ("(1,2)", "[1,2]", False, True),
    ("C", "\\text{(C)}", False, True), ("x^2+2x+1", "(x+1)^2", False, True),
    ("18", "18", True, True), ("\\frac{36}{2}", "18", True, False), ("18dollars", "18", True, True),
])
def test_paper_rules_compare_as_skythought_does(pred, gold, gsm8k, want):
    assert skythought.skythought_match(skythought.skythought_normalize(pred), gold, gsm8k=gsm8k) == want


# -----------------------------------------------------------------------------
# grade_responses: parallel, time-limited, never raising

SLOW = "\\boxed{9^{9^{9^{9}}}}"  # latex2sympy evaluates the power: minutes of big-integer arithmetic in C


def test_pathological_latex_times_out_and_the_run_goes_on():
    responses = ["\\boxed{5}", SLOW, "\\boxed{6}", "\\boxed{025}", SLOW, "\\boxed{7}"]
    answers = ["5", "1", "7", "25", "2", "7"]
    t = time.time()
    results = G.grade_responses(responses, answers, workers=2, timeout=1.0)
    assert time.time() - t < 15
    assert [r["correct"] for r in results] == [True, False, False, True, False, True]
    assert [r["error"] for r in results] == [None, "timeout", None, None, "timeout", None]
    assert results[1]["pred"] == "9^{9^{9^{9}}}"


def test_grading_works_outside_the_main_thread():
    out = {}
    th = threading.Thread(target=lambda: out.update(r=G.grade_responses(["\\boxed{4}", SLOW], ["4", "3"], timeout=1.0)))
    th.start()
    th.join(30)
    assert [r["correct"] for r in out["r"]] == [True, False] and out["r"][1]["error"] == "timeout"


def test_bad_text_never_raises():
    responses = ["", "\\boxed{}", "\\boxed{\\frac{}{}}", "\\boxed{)(}", "\x00\ud800", None, "\\boxed{5}"]
    answers = ["1", "2", "3", "4", "5", "6", "\\frac{"]  # the last reference answer does not parse
    results = G.grade_responses(responses, answers)
    assert not any(r["correct"] for r in results)
    assert results[-1]["error"].startswith("exception: ValueError: the reference answer")
    assert all(r["error"] is None for r in results[:-1])
    assert G.grade_responses([], []) == []


def test_unparsable_reference_still_matches_the_same_string():
    assert G.answers_match("\\frac{", "\\frac{")


# -----------------------------------------------------------------------------
# metrics and reports


def test_pass_at_k_is_the_unbiased_estimator():
    from math import comb
    for n, c, k in [(8, 0, 1), (8, 8, 1), (8, 2, 1), (8, 2, 8), (10, 3, 4), (16, 5, 8)]:
        assert E.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert E.pass_at_k(8, 2, 1) == pytest.approx(0.25)


def test_bench_metrics_counts_missing_samples_as_wrong():
    problems = [{"id": "a", "level": 1}, {"id": "b", "level": 2}]
    responses = [
        {"id": "a", "sample": 0, "correct": True, "tokens": 10, "finish": "stop", "error": None, "correct_paper": True},
        {"id": "a", "sample": 1, "correct": False, "tokens": 30, "finish": "length", "error": "timeout",
         "correct_paper": True},
        {"id": "b", "sample": 0, "correct": True, "tokens": 20, "finish": "stop", "error": None,
         "correct_paper": False},
    ]
    m = E.bench_metrics(problems, responses, n=2)
    assert m["accuracy"] == 0.5 and m["accuracy_paper"] == 0.5 and m["missing"] == 1
    assert m["pass@k"]["1"] == pytest.approx(0.5) and m["pass@k"]["2"] == 1.0
    assert (m["tokens"], m["tokens_correct"], m["tokens_wrong"]) == (20, 15, 30)
    assert m["cut_at_limit"] == pytest.approx(1 / 3) and m["grading_errors"] == {"timeout": 1}
    assert m["by_level"]["1"] == {"problems": 1, "accuracy": 0.5, "tokens": 20}


def test_length_statistics_and_the_standard_error_on_known_numbers():
    """Median and 90th percentile as numpy computes them (linear), the share cut at the cap, and the standard error
    of an accuracy over problems: the sample standard deviation of the per-problem accuracies over sqrt(problems)."""
    problems = [{"id": str(i)} for i in range(5)]
    verdicts = [[1, 1], [1, 0], [0, 0], [1, 1], [0, 1]]  # per-problem accuracy 1, .5, 0, 1, .5
    responses = [{"id": str(i), "sample": j, "correct": bool(v), "tokens": 10 * (2 * i + j + 1),
                  "finish": "length" if 2 * i + j >= 8 else "stop", "error": None, "correct_paper": bool(v)}
                 for i, vs in enumerate(verdicts) for j, v in enumerate(vs)]
    m = E.bench_metrics(problems, responses, n=2)
    tokens = sorted(r["tokens"] for r in responses)  # 10, 20, ..., 100
    assert m["tokens"] == 55 and m["tokens_median"] == 55 and m["tokens_p90"] == pytest.approx(91)
    assert m["tokens_median"] == pytest.approx(statistics.median(tokens)) and m["cut_at_limit"] == pytest.approx(0.2)
    per_problem = [1, 0.5, 0, 1, 0.5]
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["accuracy_se"] == pytest.approx(statistics.stdev(per_problem) / math.sqrt(5))
    one = E.bench_metrics(problems[:1], responses[:2], n=2)
    assert one["accuracy_se"] is None and one["tokens_p90"] == pytest.approx(19)


def test_markdown_report_with_a_baseline():
    def summary(name, acc, tokens):
        m = {"problems": 2, "samples": 1, "responses": 2, "missing": 0, "accuracy": acc, "pass@k": {"1": acc},
             "tokens": tokens, "tokens_correct": tokens, "tokens_wrong": tokens, "cut_at_limit": 0.0,
             "grading_errors": {}, "accuracy_se": None, "tokens_median": tokens, "tokens_p90": tokens}
        return {"model": name, "settings": {"protocol": "tldr-paper", "temperature": 0.7, "top_p": 1.0,
                                            "max_new_tokens": 8192, "seed": 0}, "benchmarks": {"gsm8k": m}}
    base, ours = summary("base", 0.9, 1000), summary("tldr", 0.85, 600)
    ours["compare"] = {"baseline": "x", "benchmarks": E.compare_summaries(ours, base)}
    assert ours["compare"]["benchmarks"]["gsm8k"] == pytest.approx({"accuracy_change": -0.05, "token_reduction": 0.4})
    md = E.markdown_report(ours, base)
    assert "| base (baseline) | 90.0 / 1000 |" in md and "| tldr | 85.0 / 600 |" in md
    assert "| change | -5.0 pt / -40.0% tokens |" in md


# -----------------------------------------------------------------------------
# the grade CLI


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_grade_cli_writes_correct_and_pred(tmp_path, capsys):
    rows = [{"id": 1, "response": "<think>hmm</think> \\boxed{18}", "answer": "18", "finish_reason": "stop"},
            {"id": 2, "response": "Wait, maybe \\boxed{7}", "answer": 7, "finish_reason": "length"},
            {"id": 3, "response": "The answer is \\boxed{1{,}000}.", "answer": "1000", "completion_tokens": 9}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    G.main([str(src), "--out", str(tmp_path / "out.jsonl")])
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["pred"]) for r in out] == [(True, "18"), (False, None), (True, "1{,}000")]
    assert out[0]["id"] == 1 and out[2]["completion_tokens"] == 9
    assert "accuracy 66.67% (2/3)" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("", "has no responses"),
    ('{"response": "x", "answer": "1"}\n{"answer": "2"}\n', "in.jsonl:2: missing field(s) response"),
    ('{"response": "x", "answer": "1"}\nnot json\n', "in.jsonl:2: not valid JSON"),
    ('{"response": "x", "answer": "1"}\n{"response": null, "answer": "1"}\n',
     "in.jsonl:2: 'response' must be a string"),
    ('{"response": "x", "answer": null}\n', "in.jsonl:1: 'answer' must be a string or a number"),
])
def test_grade_cli_bad_input(tmp_path, content, message):
    (tmp_path / "in.jsonl").write_text(content)
    with pytest.raises(SystemExit) as e:
        G.main([str(tmp_path / "in.jsonl")])
    assert message in str(e.value)


def test_grade_cli_missing_file(tmp_path):
    with pytest.raises(SystemExit) as e:
        G.main([str(tmp_path / "nope.jsonl")])
    assert "nope.jsonl: no such file" in str(e.value)


def test_unknown_benchmark_is_an_error_before_loading_anything(tmp_path):
    with pytest.raises(SystemExit) as e:
        E.main(["--model", str(tmp_path), "--bench", "gsm8k,aime25"])
    assert "unknown benchmark aime25" in str(e.value) and "math500" in str(e.value)


@pytest.mark.parametrize("content, message", [
    ('{"id": 1, "problem": "1+1?", "answer": "2"}\n{"id": 2, "problem": "2+2?"}\n',
     "gsm8k_test.jsonl:2: missing field(s) answer"),
    ("", "gsm8k_test.jsonl has no problems"),
    ('{"id": 1, "problem": "1+1?", "answer": null}\n',
     "gsm8k_test.jsonl:1: 'answer' must be a string or a number, got null"),
    (None, "gsm8k_test.jsonl not found; run `python data/prepare.py` first"),
])
def test_bad_benchmark_files_are_errors_before_loading_anything(tmp_path, content, message):
    if content is not None:
        (tmp_path / "gsm8k_test.jsonl").write_text(content)
    with pytest.raises(SystemExit) as e:
        E.main(["--model", str(tmp_path), "--bench", "gsm8k", "--data_dir", str(tmp_path)])
    assert message in str(e.value)


# -----------------------------------------------------------------------------
# agreement with SkyThought on real R1 outputs (the acceptance check)


def test_agreement_with_skythought_on_r1_outputs(shared_data):
    rows = []
    for b in ["gsm8k", "math500", "amc23"]:
        path = shared_data / "r1_outputs" / f"DS-R1-7B-TLDR_{b}.jsonl"
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    responses, answers = [r["response"] for r in rows], [r["answer"] for r in rows]
    t = time.time()
    strict = G.grade_responses(responses, answers)
    paper = G.grade_responses(responses, answers, rules="skythought", gsm8k=[r["benchmark"] == "gsm8k" for r in rows])
    assert time.time() - t < 60

    def agreement(results, idx):
        return sum(results[i]["correct"] == rows[i]["skythought_correct"] for i in idx) / len(idx)
    everything = range(len(rows))
    assert agreement(paper, everything) >= 0.995 and agreement(strict, everything) >= 0.985
    for bench, need in [("gsm8k", 0.995), ("amc23", 0.995), ("math500", 0.96)]:
        assert agreement(strict, [i for i, r in enumerate(rows) if r["benchmark"] == bench]) >= need, bench
    assert not any(r["error"] for r in strict + paper)


def test_grade_cli_paper_rules(shared_data, capsys):
    G.main([str(shared_data / "r1_outputs" / "DS-R1-7B-TLDR_gsm8k.jsonl"), "--rules", "skythought",
            "--agree", "skythought_correct"])
    assert "agreement with skythought_correct 100.00%" in capsys.readouterr().out


def test_grade_imports_neither_torch_nor_the_engine():
    code = "import sys, grade; bad = {'torch', 'sample', 'model'} & set(sys.modules); assert not bad, bad"
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(G.__file__).parent, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_grade_cli_checks_the_out_folder_before_grading(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"response": "\\boxed{1}", "answer": "1"}])
    with pytest.raises(SystemExit) as e:
        G.main([str(src), "--out", str(tmp_path / "no" / "such" / "out.jsonl")])
    assert "does not exist" in str(e.value)
