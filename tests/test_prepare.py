"""data/prepare.py: conversions from the Hub's formats to ours, on hand-made rows; the offline failure."""
import json
import os
import subprocess
import sys

import pytest

import prepare


def test_gsm8k_answer_is_the_number_after_the_marks_without_commas():
    rows = prepare.gsm8k_rows([{"question": "How much?", "answer": "5 * 250 = <<5*250=1250>>1250\n#### 1,250"},
                               {"question": "Owed?", "answer": "She owes 3.\n#### -3"}], "test")
    assert rows[0] == {"id": "gsm8k-test-0", "problem": "How much?", "answer": "1250",
                       "solution": "5 * 250 = <<5*250=1250>>1250", "source": "openai/gsm8k main test"}
    assert rows[1]["answer"] == "-3" and rows[1]["id"] == "gsm8k-test-1"


def test_math500_keeps_id_level_and_latex_answer():
    src = {"problem": "Convert $(0,3)$.", "solution": "...", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
           "subject": "Precalculus", "level": 2, "unique_id": "test/precalculus/807.json"}
    (row,) = prepare.math500_rows([src])
    assert row["id"] == "test/precalculus/807.json" and row["answer"] == src["answer"] and row["level"] == 2


def test_aimo_rows_pick_the_year_and_key_by_url():
    url = "https://artofproblemsolving.com/wiki/index.php/{}_Problems/Problem_{}"
    rows = [{"problem": "A", "answer": "025", "url": url.format("2024_AIME_I", 7)},
            {"problem": "B", "answer": "113", "url": url.format("2023_AIME_II", 1)},
            {"problem": "C", "answer": 36.0, "url": url.format("2023_AMC_12A", 10)},
            {"problem": "D", "answer": 0.5, "url": url.format("2023_AMC_12B", 3)}]
    assert prepare.aimo_rows(rows, 2024) == [{"id": "2024_AIME_I-7", "problem": "A", "answer": "025",
                                              "source": url.format("2024_AIME_I", 7)}]
    assert [(r["id"], r["answer"]) for r in prepare.aimo_rows(rows, 2023)] == [
        ("2023_AIME_II-1", "113"), ("2023_AMC_12A-10", "36"), ("2023_AMC_12B-3", "0.5")]


def test_aime_dev_is_1983_to_2023_from_the_csv(tmp_path):
    csv = tmp_path / "aime.csv"
    csv.write_text('ID,Year,Problem Number,Question,Answer,Part\n'
                   '1983-1,1983,1,"Let $x$, $y$ and $z$ all exceed $1$.",60,\n'
                   '1994-15,1994,15,"Find it.",080 or 081 (both were accepted),\n'
                   '2024-II-1,2024,1,"Later.",204,II\n')
    rows = prepare.aime_dev_rows(prepare.read_rows(csv))
    assert [r["id"] for r in rows] == ["aime-dev-0", "aime-dev-1"]
    assert rows[0]["problem"] == "Let $x$, $y$ and $z$ all exceed $1$."
    assert rows[1]["answer"] == "080 or 081 (both were accepted)"


def test_main_writes_our_schema(tmp_path, monkeypatch):
    # the Hub replaced by local files in the sources' formats (the parquet ones need pyarrow, not installed here)
    src = tmp_path / "hub"
    src.mkdir()
    (src / "test.jsonl").write_text(json.dumps({"problem": "1+1?", "solution": "2", "answer": "2", "subject": "Algebra",
                                                "level": 1, "unique_id": "test/algebra/1.json"}) + "\n")
    (src / "aime.csv").write_text("ID,Year,Problem Number,Question,Answer,Part\n1985-1,1985,1,Q?,32,\n")
    files = {"test.jsonl": src / "test.jsonl", "AIME_Dataset_1983_2024.csv": src / "aime.csv"}
    monkeypatch.setattr(prepare, "download", lambda repo, filename, out_dir: files[filename])
    prepare.main(["--out_dir", str(tmp_path / "bench"), "--only", "math500,aime_1983_2023"])
    math = [json.loads(line) for line in (tmp_path / "bench" / "math500.jsonl").read_text().splitlines()]
    dev = [json.loads(line) for line in (tmp_path / "bench" / "aime_1983_2023.jsonl").read_text().splitlines()]
    assert math[0]["id"] == "test/algebra/1.json" and {"id", "problem", "answer"} <= set(math[0])
    assert dev == [{"id": "aime-dev-0", "problem": "Q?", "answer": "32", "source": "AIME 1983-2023 (the TLDR dev set)"}]
    # no temporary files left
    assert sorted(os.listdir(tmp_path / "bench")) == ["SHA256SUMS", "aime_1983_2023.jsonl", "math500.jsonl"]


def test_parquet_sources_are_read_when_pyarrow_is_there(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (prepare.py asks for it only for parquet)")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"question": "Q", "answer": "x\n#### 7"}]), tmp_path / "t.parquet")
    assert prepare.gsm8k_rows(prepare.read_rows(tmp_path / "t.parquet"), "train")[0]["answer"] == "7"


def test_offline_fails_with_a_clear_message(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no network, empty cache
    p = subprocess.run([sys.executable, prepare.__file__, "--out_dir", str(tmp_path / "bench"),
                        "--only", "math500"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "could not download test.jsonl of the dataset HuggingFaceH4/MATH-500" in p.stderr
    assert "needs network access" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "bench" / "math500.jsonl").exists()


def test_unknown_set_is_an_error():
    with pytest.raises(SystemExit) as e:
        prepare.main(["--only", "gsm8k_test,aime25"])
    assert "unknown set(s) aime25" in str(e.value)


def test_s1k_answers_and_problems_without_one():
    rows = [{"question": "Find n.", "solution": "Hence $n = \\boxed{128}$.", "source_type": "qq8933/AIME_1983_2024"},
            {"question": "Prove it.", "solution": "Suppose not.\nThen ...",
             "source_type": "AI-MO/NuminaMath-CoT/olympiads"},
            {"question": "Value?", "solution": "$\\frac{1}{2}$", "source_type": "daman1209arora/jeebench/math"}]
    assert prepare.s1k_rows(rows) == [
        {"id": "s1k-0", "problem": "Find n.", "answer": "128", "source": "simplescaling/s1K (qq8933/AIME_1983_2024)"},
        {"id": "s1k-2", "problem": "Value?", "answer": "\\frac{1}{2}",
         "source": "simplescaling/s1K (daman1209arora/jeebench/math)"}]


def test_pinned_checksums_are_those_of_the_reference_copies(shared_data):
    import hashlib
    for name, digest in prepare.CHECKSUMS.items():
        assert hashlib.sha256((shared_data / f"{name}.jsonl").read_bytes()).hexdigest() == digest, name


def test_conversion_reproduces_the_reference_copies_byte_for_byte(shared_data, tmp_path, monkeypatch):
    """Source rows rebuilt from the reference copies (in the Hub's formats) convert back to identical files,
    and SHA256SUMS lists them for `sha256sum -c`."""
    import csv
    ref = {n: [json.loads(line) for line in (shared_data / f"{n}.jsonl").read_text().splitlines()]
           for n in ("gsm8k_test", "math500", "aime_1983_2023")}
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": r["problem"],
                                       "answer": f"{r['solution']}\n#### {r['answer']}"}) + "\n"
                           for r in ref["gsm8k_test"]))
    math = tmp_path / "math.jsonl"
    math.write_text("".join(json.dumps({"problem": r["problem"], "solution": r["solution"], "answer": r["answer"],
                                        "subject": r["subject"], "level": r["level"], "unique_id": r["id"]}) + "\n"
                            for r in ref["math500"]))
    aime = tmp_path / "aime.csv"
    with open(aime, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Year", "Problem Number", "Question", "Answer", "Part"])
        w.writerows([[r["id"], 1983, 1, r["problem"], r["answer"], ""] for r in ref["aime_1983_2023"]])
    files = {"main/test-00000-of-00001.parquet": gsm, "test.jsonl": math, "AIME_Dataset_1983_2024.csv": aime}
    monkeypatch.setattr(prepare, "download", lambda repo, filename, out_dir: files[filename])
    out = tmp_path / "bench"
    prepare.main(["--out_dir", str(out), "--only", "gsm8k_test,math500,aime_1983_2023"])
    for n in ref:
        assert (out / f"{n}.jsonl").read_bytes() == (shared_data / f"{n}.jsonl").read_bytes(), n
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.count(": OK") == 3


# -----------------------------------------------------------------------------
# the official training data, served by a local HTTP server in the release's layout


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A local server holding 7B files in the official format (one JSON object per line, query and response), and
    prepare.OFFICIAL pointing at their git blob ids. Returns (base url, the served folder, write(name, text))."""
    import functools
    import http.server
    import threading
    root = tmp_path / "release"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    table = {}
    monkeypatch.setattr(prepare, "OFFICIAL", {"7b": table})

    def write(name, text, served=None):
        """The official file of `name` is `text`; the server sends `served` (default: the same bytes)."""
        path = f"data/data_repo/7b_train/{name}.json"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(text.encode())
        table[name] = (path, prepare.git_blob_sha1(root / path))
        if served is not None:
            (root / path).write_bytes(served.encode())

    yield f"http://127.0.0.1:{server.server_address[1]}/", write
    server.shutdown()


SYSTEM1_LINES = "".join(json.dumps({"query": f"{a} + {a}?", "response": f"{a} + {a} = {2 * a}. The answer is "
                                    f"\\boxed{{{2 * a}}}.", "extra": 1}) + "\n" for a in range(1, 9))
SYSTEM2_LINES = "".join(json.dumps({"query": f"{a} * {b}?", "response": f"<think>\n{a} times {b}. Wait, check: "
                                    f"{a * b}.\n</think>\n\n\\boxed{{{a * b}}}"}) + "\n"
                        for a in range(2, 7) for b in (3, 7))


def test_the_official_data_is_downloaded_checked_converted_and_trained_on(release, tmp_path, tiny_models):
    url, write = release
    write("system1", SYSTEM1_LINES)
    write("system2", SYSTEM2_LINES)
    out = tmp_path / "run" / "official"
    prepare.main(["--official", "7b", "--out_dir", str(out), "--official_url", url])
    s1 = [json.loads(line) for line in (out / "system1.jsonl").read_text().splitlines()]
    assert s1[0] == {"id": "tldr-7b-system1-0", "problem": "1 + 1?", "response": "1 + 1 = 2. The answer is \\boxed{2}.",
                     "source": "zzli2022/TLDR@40f7a16:data/data_repo/7b_train/system1.json"}  # "extra" left out
    assert len(s1) == 8 and sorted(os.listdir(out)) == ["SHA256SUMS", "system1.jsonl", "system2.jsonl"]
    import train
    train.main([f"--model={tiny_models['qwen2']}", f"--system1={out / 'system1.jsonl'}",
                f"--system2={out / 'system2.jsonl'}", "--mixture=static", f"--out_dir={tmp_path / 'run' / 'tldr'}",
                "--max_steps=2", "--global_batch=4", "--row_tokens=512", "--max_len=512", "--save_interval=2"])
    state = json.loads((tmp_path / "run" / "tldr" / "step_000002" / "train_state" / "state.json").read_text())
    assert state["step"] == 2 and state["data"]["system1"]["digest"] == prepare.sha256(
        (out / "system1.jsonl").read_text())


@pytest.mark.parametrize("served, why", [
    (SYSTEM1_LINES[:len(SYSTEM1_LINES) // 2], "truncated"),
    (SYSTEM1_LINES.replace("\\\\boxed{4}", "\\\\boxed{5}"), "altered"),
])
def test_a_truncated_or_altered_download_is_refused_and_leaves_nothing(release, tmp_path, served, why):
    url, write = release
    write("system1", SYSTEM1_LINES, served=served)
    out = tmp_path / "official"
    with pytest.raises(SystemExit, match="truncated or not the official file; nothing was written") as e:
        prepare.main(["--official", "7b", "--only", "system1", "--out_dir", str(out), "--official_url", url])
    assert "git blob" in str(e.value) and os.listdir(out) == [], why


def test_a_line_the_official_trainer_could_not_read_is_refused_with_its_line(release, tmp_path):
    url, write = release
    write("system1", SYSTEM1_LINES + json.dumps({"query": "q", "answer": "not a response"}) + "\n")
    out = tmp_path / "official"
    with pytest.raises(SystemExit, match=r"system1.json:9: missing field\(s\) response; .*nothing was written"):
        prepare.main(["--official", "7b", "--only", "system1", "--out_dir", str(out), "--official_url", url])
    assert os.listdir(out) == []


def test_an_unreachable_release_is_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "official"
    with pytest.raises(SystemExit, match="could not download http://127.0.0.1:9/data/data_repo/7b_train/"
                                         "gsm8k_7b_shortcot.json .*nothing was written.*--official_url file:///"):
        prepare.main(["--official", "7b", "--only", "system1", "--out_dir", str(out),
                      "--official_url", "http://127.0.0.1:9/"])
    assert os.listdir(out) == []
