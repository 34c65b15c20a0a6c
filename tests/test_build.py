"""data/build.py: shortest correct answers, counted misses, resumable sampling, bounds."""
import json

import pytest

import build


def rows(*specs):
    return [{"id": pid, "problem": f"p{pid}", "sample": s, "response": resp, "tokens": t, "correct": ok, "pred": "4"}
            for pid, s, resp, t, ok in specs]


def test_system2_keeps_the_shortest_correct_answer_and_counts_misses(tmp_path, capsys):
    out = tmp_path / "system2.jsonl"
    graded = rows(("a", 0, "long</think>\n\n\\boxed{4}", 90, True), ("a", 1, "short</think>\n\n\\boxed{4}", 30, True),
                  ("a", 2, "shortest but wrong</think>", 10, False), ("b", 0, "x", 5, False), ("b", 1, "y", 6, False))
    build.write_dataset(graded, out, lambda rs: min(rs, key=lambda r: (r["tokens"], r["sample"])))
    kept = [json.loads(l) for l in out.read_text().splitlines()]
    assert kept == [{"id": "a", "problem": "pa", "response": "short</think>\n\n\\boxed{4}", "tokens": 30}]
    assert "1 of 2 problems had no correct answer and are left out: b" in capsys.readouterr().out


@pytest.mark.parametrize("response, rendered", [
    ("Let me see.\n</think>\n\n\\boxed{4}", "<think>\nLet me see.\n</think>\n\n\\boxed{4}"),  # R1's own
    ("<think>\nLet me see.\n</think>\n\n\\boxed{4}", "<think>\nLet me see.\n</think>\n\n\\boxed{4}"),  # older template
    ("2 + 2 = 4. The answer is \\boxed{4}.",  # an answer without thought
     "<think>\n\n</think>\n\n2 + 2 = 4. The answer is \\boxed{4}."),
])
def test_a_response_with_or_without_a_think_block_closes_its_thinking_once(response, rendered, monkeypatch):
    """Training data, built or official, hold responses as their models wrote them: R1's with its thinking (after the
    prompt's "<think>\n", or repeating it), an instruct model's without. Each is rendered so that the assistant turn
    opens its thinking once and closes it before the answer; a model without a <think> token gets the text as is."""
    import prompts
    import tiny
    tok = tiny.make_tokenizer()
    ids, n_prompt = prompts.example_ids(tok, "2+2?", response)
    assert tok.decode(ids).endswith("<｜Assistant｜>" + rendered + tiny.EOS)
    assert tok.decode(ids[:n_prompt]).endswith("<｜Assistant｜><think>\n")
    monkeypatch.setattr(tiny, "THINK", [])  # an instruct model: no <think> token, a template that opens none
    plain = tiny.make_tokenizer()
    plain.chat_template = tiny.CHAT_TEMPLATE.replace("<think>\n{% endif %}", "{% endif %}")
    ids, n_prompt = prompts.example_ids(plain, "2+2?", response)
    assert plain.decode(ids[n_prompt:]) == response + tiny.EOS


def test_no_correct_answer_at_all_writes_nothing(tiny_models, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": i, "problem": f"{i}+1", "answer": str(i + 1)}) + "\n"
                                for i in range(3)))
    out = tmp_path / "s2.jsonl"
    argv = ["system2", "--model", str(tiny_models["qwen2"]), "--problems", str(problems), "--out", str(out),
            "--samples", "2", "--max_new_tokens", "6"]
    with pytest.raises(SystemExit, match="no problem got a correct answer"):
        build.main(argv)
    assert not out.exists()
    samples = out.with_suffix(".samples.jsonl").read_text().splitlines()
    assert len(samples) == 6  # kept for a rerun, which samples nothing again
    with pytest.raises(SystemExit):
        build.main(argv)
    assert out.with_suffix(".samples.jsonl").read_text().splitlines() == samples


def test_bounds_that_cannot_drive_tldr_are_refused(tiny_models, tmp_path):
    problems = tmp_path / "dev.jsonl"
    problems.write_text(json.dumps({"id": 0, "problem": "1+1", "answer": "2"}) + "\n")
    model = str(tiny_models["qwen2"])
    with pytest.raises(SystemExit, match="cannot drive TLDR: the long model must be more accurate"):
        build.main(["bounds", "--short", model, "--long", model, "--problems", str(problems),
                    "--out", str(tmp_path / "bounds.json"), "--max_new_tokens", "4"])
    assert not (tmp_path / "bounds.json").exists()


def test_missing_model_and_bad_problems(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"id": 0, "problem": "1+1"}\n')
    with pytest.raises(SystemExit, match="p.jsonl:1: missing field\\(s\\) answer"):
        build.main(["system1", "--model", "x", "--problems", str(tmp_path / "p.jsonl"),
                    "--out", str(tmp_path / "o.jsonl")])
    (tmp_path / "p.jsonl").write_text('{"id": 0, "problem": "1+1", "answer": "2"}\n')
    with pytest.raises(SystemExit, match="nothing: no such model directory"):
        build.main(["system1", "--model", str(tmp_path / "nothing"), "--problems", str(tmp_path / "p.jsonl"),
                    "--out", str(tmp_path / "o.jsonl")])


def test_dev_is_the_first_problems_or_a_seeded_draw_in_source_order(tmp_path):
    src = tmp_path / "pool.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Q{i}?", "answer": str(i)}) + "\n"
                           for i in range(30)))
    # the official dev set: the first problems in file order, whatever the seed
    for seed in ("0", "5"):
        build.main(["dev", "--problems", str(src), "--size", "10", "--seed", seed, "--out", str(tmp_path / "f.jsonl")])
        assert (tmp_path / "f.jsonl").read_text() == "".join(src.read_text().splitlines(True)[:10])
    seeded = ["dev", "--problems", str(src), "--size", "10", "--draw", "seeded"]
    build.main([*seeded, "--out", str(tmp_path / "a.jsonl")])
    build.main([*seeded, "--out", str(tmp_path / "b.jsonl")])
    build.main([*seeded, "--seed", "1", "--out", str(tmp_path / "c.jsonl")])
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    a_text, b_text, c_text = ((tmp_path / f"{n}.jsonl").read_text() for n in "abc")
    assert a_text == b_text != c_text
    ids = [int(r["id"][1:]) for r in a]
    assert len(ids) == 10 and ids == sorted(set(ids)) and ids != list(range(10))
    assert a[0] == {"id": f"q{ids[0]}", "problem": f"Q{ids[0]}?", "answer": str(ids[0])}
    with pytest.raises(SystemExit, match="--size 31: .* has 30 problems"):
        build.main(["dev", "--problems", str(src), "--size", "31", "--out", str(tmp_path / "d.jsonl")])
