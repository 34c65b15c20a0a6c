"""
Download the math benchmarks from the Hugging Face Hub and write them as JSON Lines, one problem per
line with "id", "problem", "answer" (and "solution", "subject", "level" where the source has them); or, with
--official, the official release's own training data:

    python data/prepare.py                          # every set into data/bench/
    python data/prepare.py --only gsm8k_test,math500 --out_dir data/bench
    python data/prepare.py --official 7b --out_dir out/r1_7b/official    # system1.jsonl, system2.jsonl

| file                 | source on the Hub                                               |
| -------------------- | --------------------------------------------------------------- |
| gsm8k_train.jsonl    | openai/gsm8k (main, train): the System-1 problems               |
| gsm8k_test.jsonl     | openai/gsm8k (main, test)                                       |
| math500.jsonl        | HuggingFaceH4/MATH-500                                          |
| aime24.jsonl         | AI-MO/aimo-validation-aime, the 2024 problems                   |
| amc23.jsonl          | AI-MO/aimo-validation-amc, the 2023 problems                    |
| aime_1983_2023.jsonl | di-zhang-fdu/AIME_1983_2024, years 1983-2023 (the TLDR dev set) |
| s1k.jsonl            | simplescaling/s1K: the System-2 problems                        |

"answer" is the reference final answer as a string: GSM8K the number after "####" without commas,
MATH-500 its LaTeX answer, AIME/AMC the integer as written in the source ("025"; AMC's 36.0 -> "36"),
s1K the last \\boxed{} of its reference solution, or the whole solution when it is one short line (s1K
problems whose solution is a proof or an essay have no answer a grader can check: they are left out and
counted).

The official training data (--official 7b or 14b): the System-1 / System-2 files the paper trained on, published in
github zzli2022/TLDR and deleted at its HEAD (a460888); GitHub still serves them at the commit before (OFFICIAL
below). Each download is checked against its git blob SHA-1 before anything reads it (a truncated or altered file
is refused and nothing is written), then converted to train.py's format: the official reader takes one JSON object
per line (src/train_dynamic_lora/cot_domain.py:75, the .json files too) and the trainer only its "query" and
"response" (TR:759-763 of the release): they become "problem" and "response", any other field is left out, and a
line without both strings is refused with the file and line. The response is kept as written; prompts.example_ids
says how a response with and without a think block is rendered. --official_url fetches from a mirror (a file://
folder holding the release's paths) instead.

Checksums: every file written is listed with its SHA-256 in OUT/SHA256SUMS (`sha256sum -c SHA256SUMS`
checks a copy later). The six benchmark files must come out byte for byte as the copies this repository
was checked against (CHECKSUMS below); a file that differs is still written, with a warning, because the
Hub copy has then changed since. Needs network access to the Hub and pyarrow for the parquet sources.
"""

import csv
import hashlib
import http.client
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import TEXT, ArgumentParser, atomic_write, jsonl_text, read_jsonl, run, write_failed  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "bench"

# set -> (Hub dataset, file in it, expected number of problems)
SOURCES = {
    "gsm8k_train": ("openai/gsm8k", "main/train-00000-of-00001.parquet", 7473),
    "gsm8k_test": ("openai/gsm8k", "main/test-00000-of-00001.parquet", 1319),
    "math500": ("HuggingFaceH4/MATH-500", "test.jsonl", 500),
    "aime24": ("AI-MO/aimo-validation-aime", "data/train-00000-of-00001.parquet", 30),
    "amc23": ("AI-MO/aimo-validation-amc", "data/train-00000-of-00001.parquet", 40),
    "aime_1983_2023": ("di-zhang-fdu/AIME_1983_2024", "AIME_Dataset_1983_2024.csv", 919),
    "s1k": ("simplescaling/s1K", "data/train-00000-of-00001.parquet", 1000),
}

# SHA-256 of the files this script writes, as checked against the copies the tests and the grader study used
# (s1K has no reference copy: its checksum is only recorded in SHA256SUMS)
CHECKSUMS = {
    "gsm8k_train": "289914ec4a3bbfac580fa160a6b3e3cd5d4e5b2bbf3755f1ad81f8c1f9859e60",
    "gsm8k_test": "b602a08cb70eeb9833d387cd253c08d76b2599977edb881c5463d29250fd60b2",
    "math500": "f556594be26ba2d22b2eb4816ef42b5b833c047075c09f2cf2ccf8ebfde11b6c",
    "aime24": "9a15dd7ddcf4f4176e23afdc01648567949739d84c85cd66591e9ef31221f4a4",
    "amc23": "4de011782c49fffe5a52c85e802a1fc04322a431f05e475e0d51bfaec925e886",
    "aime_1983_2023": "3979ea8298b7099088de181f1dce10ad2c1352598163ba6be14c952fbecb22a9",
}

# -----------------------------------------------------------------------------
# conversions from the source rows to our schema (pure functions: the tests feed them hand-made rows)


def answer_text(x):
    """A reference answer as a string; integral floats lose their ".0" (AMC's answers are floats)."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x).strip()


def gsm8k_rows(rows, split):
    out = []
    for i, r in enumerate(rows):
        solution, _, final = r["answer"].rpartition("####")
        out.append({"id": f"gsm8k-{split}-{i}", "problem": r["question"], "answer": final.strip().replace(",", ""),
                    "solution": solution.strip(), "source": f"openai/gsm8k main {split}"})
    return out


def math500_rows(rows):
    return [{"id": r["unique_id"], "problem": r["problem"], "answer": r["answer"], "solution": r["solution"],
             "subject": r["subject"], "level": r["level"], "source": "MATH-500 (HuggingFaceH4/MATH-500)"}
            for r in rows]


def aimo_rows(rows, year):
    """The problems of one year from AI-MO's validation sets, keyed like "2024_AIME_I-1" from their url."""
    out = []
    for r in rows:
        m = re.search(r"/(\d{4})_([^/]+?)_Problems/Problem_(\d+)", r["url"])
        if m and int(m.group(1)) == year:
            out.append({"id": f"{m.group(1)}_{m.group(2)}-{m.group(3)}", "problem": r["problem"],
                        "answer": answer_text(r["answer"]), "source": r["url"]})
    return out


def aime_dev_rows(rows):
    """AIME 1983-2023 from the CSV (columns Year, Question, Answer), in the file's order."""
    keep = [r for r in rows if int(r["Year"]) <= 2023]
    return [{"id": f"aime-dev-{i}", "problem": r["Question"], "answer": answer_text(r["Answer"]),
             "source": "AIME 1983-2023 (the TLDR dev set)"} for i, r in enumerate(keep)]


def s1k_answer(solution):
    """The checkable final answer of an s1K reference solution, or None (a proof, an essay)."""
    from grade import extract_answer
    solution = solution.strip()
    if "\\boxed" in solution or "\\fbox" in solution:
        return extract_answer(solution)
    if solution and "\n" not in solution and len(solution) <= 40:
        return solution.strip("$ .")
    return None


def s1k_rows(rows):
    """s1K's problems with a checkable answer; ids keep the position in the source (s1k-17)."""
    out = []
    for i, r in enumerate(rows):
        answer = s1k_answer(r["solution"])
        if answer:
            out.append({"id": f"s1k-{i}", "problem": r["question"], "answer": answer,
                        "source": f"simplescaling/s1K ({r['source_type']})"})
    return out


CONVERT = {
    "gsm8k_train": lambda rows: gsm8k_rows(rows, "train"),
    "gsm8k_test": lambda rows: gsm8k_rows(rows, "test"),
    "math500": math500_rows,
    "aime24": lambda rows: aimo_rows(rows, 2024),
    "amc23": lambda rows: aimo_rows(rows, 2023),
    "aime_1983_2023": aime_dev_rows,
    "s1k": s1k_rows,
}

# the official training data: size -> set -> (its path in the release at OFFICIAL_COMMIT, its git blob SHA-1)
OFFICIAL_COMMIT = "40f7a16584a785cf711c5c9cbc24167c45afddc4"
OFFICIAL_URL = f"https://raw.githubusercontent.com/zzli2022/TLDR/{OFFICIAL_COMMIT}/"
OFFICIAL = {
    "7b": {"system1": ("data/data_repo/7b_train/gsm8k_7b_shortcot.json", "4bffd534dff1f5e3e0e2d17714cf30f1aa54404e"),
           "system2": ("data/data_repo/7b_train/s1_7b_r1_prompt_shortest_response.json",
                       "0b10de97c63236e41a5412ccab93f49fea9c5858")},
    "14b": {"system1": ("data/data_repo/14b_train/gsm8k_14b_shortcot_ds.jsonl",
                        "f29ced3ea92c5200e0e97a65481c7b8b199a7302"),
            "system2": ("data/data_repo/14b_train/s1_14b_longcot_outputs_ds.jsonl",
                        "c936a218030da93895808c33e0cdc945608e761a")},
}
OFFICIAL_MAX_BYTES = 2**31  # no official file is near this: a larger answer is not one of them


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file's content, sha1(b"blob <size>\\0" + content), computed as it is read."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_official(url: str, dest: Path):
    """url into dest, streamed, at most OFFICIAL_MAX_BYTES; any failure is one line."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb", buffering=0) as f:
            while block := r.read(1 << 20):
                if f.tell() + len(block) > OFFICIAL_MAX_BYTES:
                    sys.exit(f"error: {url}: more than {OFFICIAL_MAX_BYTES >> 30} GiB, not an official file; "
                             f"nothing was written")
                try:
                    f.write(block)
                except OSError as e:  # the disk, not the download
                    raise write_failed(dest.parent, e) from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # no network, a 404, a cut connection, a bad URL
        sys.exit(f"error: could not download {url} ({type(e).__name__}: {e}); nothing was written. --official "
                 f"needs access to raw.githubusercontent.com; offline, copy the release's files (at commit "
                 f"{OFFICIAL_COMMIT[:7]}) into a folder and pass --official_url file:///that/folder/")


def official_rows(path: Path, source: str, prefix: str) -> list[dict]:
    """The official {"query", "response"} lines as our {"id", "problem", "response", "source"} rows."""
    rows = read_jsonl(path, required=("query", "response"), types={"query": TEXT, "response": TEXT})
    return [{"id": f"{prefix}-{i}", "problem": r["query"], "response": r["response"], "source": source}
            for i, r in enumerate(rows)]


def prepare_official(size: str, names: list[str], out_dir: Path, base_url: str):
    """Each set of the official release's training data: downloaded, its git blob SHA-1 checked, converted."""
    for name in names:
        path, blob = OFFICIAL[size][name]
        url = base_url.rstrip("/") + "/" + path
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".official-") as tmp:  # removed whatever happens
            raw = Path(tmp) / Path(path).name  # (so that an error names the official file and its line)
            fetch_official(url, raw)
            got = git_blob_sha1(raw)
            if got != blob:
                sys.exit(f"error: {url}: git blob {got[:12]}, the release's file is {blob[:12]} ({raw.stat().st_size}"
                         f" bytes received): truncated or not the official file; nothing was written. Run again, or "
                         f"check --official_url")
            try:
                rows = official_rows(raw, f"zzli2022/TLDR@{OFFICIAL_COMMIT[:7]}:{path}", f"tldr-{size}-{name}")
            except ValueError as e:
                sys.exit(f"error: {url}: {e}; nothing was written")
        text = jsonl_text(rows)
        atomic_write(out_dir / f"{name}.jsonl", text)
        record_checksum(out_dir, f"{name}.jsonl", sha256(text))
        print(f"prepare: {out_dir / (name + '.jsonl')}: {len(rows)} examples of the official {size} data ({path}, "
              f"git blob {blob[:12]} checked)")


# -----------------------------------------------------------------------------
# download and read


def download(repo, filename, out_dir):
    from huggingface_hub import hf_hub_download
    try:
        return hf_hub_download(repo, filename, repo_type="dataset")
    except Exception as e:  # offline, blocked, renamed: all end the same way for the user
        sys.exit(f"error: could not download {filename} of the dataset {repo} from the Hugging Face Hub "
                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'}).\n"
                 f"data/prepare.py needs network access to huggingface.co. Offline, put the JSON Lines files "
                 f"(fields id, problem, answer) into {out_dir}/ by other means, or pass evaluate.py "
                 f"--data_dir to where they are.")


def read_rows(path):
    path = str(path)
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            sys.exit(f"error: reading {path} needs pyarrow: pip install pyarrow")
        return pq.read_table(path).to_pylist()
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return read_jsonl(path, required=())


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_checksum(out_dir, name, digest):
    """Add or replace the file's line in OUT/SHA256SUMS (the format of sha256sum)."""
    sums = out_dir / "SHA256SUMS"
    lines = [l for l in (sums.read_text().splitlines() if sums.exists() else []) if not l.endswith(f"  {name}")]
    atomic_write(sums, "".join(f"{l}\n" for l in sorted(lines + [f"{digest}  {name}"], key=lambda l: l[66:])))


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out_dir", default=str(OUT_DIR), help="output directory (default data/bench)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(SOURCES)} (with --official: system1, "
                   f"system2)")
    p.add_argument("--official", choices=list(OFFICIAL), help="the official release's training data of this model "
                   "size instead of the benchmarks")
    p.add_argument("--official_url", default=OFFICIAL_URL, help="where the release's files are (default: GitHub at "
                   "the commit that still holds them)")
    args = p.parse_args(argv)
    sets = OFFICIAL[args.official] if args.official else SOURCES
    names = [s.strip() for s in args.only.split(",")] if args.only else list(sets)
    unknown = [s for s in names if s not in sets]
    if unknown:
        sys.exit(f"error: unknown set(s) {', '.join(unknown)}; choose from {', '.join(sets)}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.official:
        return prepare_official(args.official, names, out_dir, args.official_url)
    for name in names:
        repo, filename, expected = SOURCES[name]
        try:
            rows = CONVERT[name](read_rows(download(repo, filename, out_dir)))
        except (KeyError, ValueError) as e:
            sys.exit(f"error: {repo}/{filename} is not in the expected format ({type(e).__name__}: {e}); "
                     f"the dataset may have changed on the Hub")
        text = jsonl_text(rows, ensure_ascii=False)  # the checksums are of these bytes
        atomic_write(out_dir / f"{name}.jsonl", text)
        digest = sha256(text)
        record_checksum(out_dir, f"{name}.jsonl", digest)
        note = "" if len(rows) == expected else f" ({expected} in the source" + \
            ("; the others have no checkable answer)" if name == "s1k" else ": the Hub copy differs from the paper's)")
        print(f"prepare: {out_dir / (name + '.jsonl')}: {len(rows)} problems from {repo}{note}; sha256 {digest[:12]}")
        if name in CHECKSUMS and digest != CHECKSUMS[name]:
            print(f"prepare: warning: {name}.jsonl differs from the copy this repository was checked against "
                  f"(sha256 {CHECKSUMS[name][:12]}...): the Hub data changed since; results may not compare "
                  f"with the paper's", file=sys.stderr)


if __name__ == "__main__":
    run(main, "the files already written are kept, each whole; the same command writes them again")
