"""
Prompts in, completions out. Every problem becomes its prompt here, in one way for training, the dev evaluation,
the data stages and the benchmarks (the R1 chat format, or a benchmark's template); a model is loaded here for
sampling; and sampling outputs are resumable, split over processes: under torchrun every process answers every
world-th prompt into a part file of its own, a line appended as each completion finishes, and rank 0 merges the
parts into the output in the input's order. A rerun skips the (id, sample) pairs done in the output or in any part
file, whatever the number of processes that made them; on a CPU the output is the same bytes for any number of
processes (on GPUs, for the same number: sample.py's docstring says why). Beside the output, OUT.settings.json
says how its completions were made (model, settings, prompt): a rerun made otherwise is refused. The command line
of sample.py is here too (sample.py's docstring shows it), handed sample.generate: this file never imports the
engine, which imports it for its command line.

    model, tok, rank = load_for_sampling("out/r1_7b/tldr/chosen.json")
    rows = sample_file(model, tok, [{"id": 0, "problem": "What is 7 * 8?"}], "out/x.jsonl", sample.generate, n=4,
                       max_new_tokens=512)
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from checkpoint import load_tokenizer, model_path, surely_longer
from common import (ID, PROBLEM_TYPES, TEXT, ArgumentParser, atomic_write, check_outputs, check_settings, make_dirs,
                    open_append, read_jsonl, refuse_link, row_type_error, run, write_failed)
from common import lines as numbered_lines
from model import Transformer, attention_summary
from processes import barrier, rank_and_world, run_lock, start_processes

# DeepSeek's recommended instruction for math; the user turn carries it, the answer starts with "<think>\n".
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


# -----------------------------------------------------------------------------
# prompts, in the R1 chat format: one rendering for training and testing

def prompt_text(tok, problem: str, template: str | None = None) -> str:
    """A problem as the model's prompt. template=None: the R1 prompt (the problem, then DeepSeek's instruction;
    the answer starts with "<think>\n"), the one prompt of training, dev evaluation and the deepseek protocol.
    A template (a format string with {problem}) is the user turn as SkyThought renders it for the paper's test
    table: no system prompt, the model's chat template as it is (vLLM's LLM.chat), nothing added."""
    if template is not None:
        return tok.apply_chat_template([{"role": "user", "content": template.format(problem=problem)}],
                                       tokenize=False, add_generation_prompt=True)
    # a tokenizer_config.json may set its own "prompt_instruction" (the demo's tiny models use "": no sentence)
    instruction = tok.init_kwargs.get("prompt_instruction", INSTRUCTION)
    if instruction and instruction not in problem:  # chat data may carry it already
        problem = f"{problem}\n{instruction}"
    text = tok.apply_chat_template([{"role": "user", "content": problem}],
                                   tokenize=False, add_generation_prompt=True)
    # newer R1 templates end the generation prompt with "<think>\n", older ones do not: make it always so for
    # a thinking model; a model without a <think> token (the short model, Qwen2.5-Instruct) answers directly
    if "<think>" not in tok.get_vocab() or text.endswith("<think>\n"):
        return text
    return text + "<think>\n"


def prompt_ids(tok, problem: str, template: str | None = None) -> list[int]:
    # the template already starts with BOS: encoding with special tokens again would add a second one
    return tok(prompt_text(tok, problem, template), add_special_tokens=False)["input_ids"]


def example_ids(tok, problem: str, response: str) -> tuple[list[int], int]:
    """A training example: the prompt exactly as at generation time, then the response and EOS.
    Returns (ids, number of prompt tokens). For a thinking model the prompt ends with "<think>\n": a response that
    starts with it too (R1's answers under its older template) has it once, and a response without "</think>" (an
    answer without thought: Qwen2.5-Instruct's System-1 answers, the official System-1 files) follows an empty
    thought, so that every example closes its thinking and the answer stands after "</think>" as in R1's."""
    prompt = prompt_ids(tok, problem)
    if prompt_text(tok, problem).endswith("<think>\n"):
        response = response.removeprefix("<think>\n")
        response = response if "</think>" in response else "\n</think>\n\n" + response
    completion = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + completion, len(prompt)


def stop_ids(tok) -> list[int]:
    return [tok.eos_token_id]


def load_for_sampling(path, dtype: str | None = None):
    """(model, tokenizer, rank) of a model directory, a run's folder or its chosen.json, on this process's device
    (under torchrun its own GPU: rank is its place, 0 alone), in dtype (default bfloat16 on a GPU, else float32);
    the attention kernel said once."""
    rank, _, device = start_processes()
    try:
        path = model_path(path)
        tok = load_tokenizer(path)
        dtype = getattr(torch, dtype) if dtype else torch.bfloat16 if device.type == "cuda" else torch.float32
        model = Transformer.from_pretrained(path, dtype=dtype, device=device)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if rank == 0:
        print(f"{path}: {attention_summary(device, dtype)}", file=sys.stderr)
    return model, tok, rank


# -----------------------------------------------------------------------------
# resumable sampling outputs

OUTPUT_TYPES = {"id": ID, "sample": int, "response": TEXT, "tokens": int, "finish": TEXT}  # a line of an output


def read_lines(path: Path, own: bool) -> dict:
    """{(id, sample): (line, row)} of an output or part file. A last line without its newline is either a torn
    write of a killed run (dropped) or a complete line whose newline an editor or another tool left out (kept);
    this process repairs the file (cuts the torn line, adds the newline) only when it owns it: the other
    processes may be writing theirs."""
    lines, good, repair = {}, 0, False
    refuse_link(path)  # (an output or a part file: the run's own, never read or repaired through a link)
    if not path.exists():
        return lines
    with open(path, "rb") as f:
        for lineno, line in numbered_lines(f, path):
            try:
                row = json.loads(line)
                complaint = None if isinstance(row, dict) and {"id", "sample"} <= set(row) else "not a completion"
                complaint = complaint or row_type_error(row, OUTPUT_TYPES)
            except (json.JSONDecodeError, UnicodeDecodeError):
                row, complaint = None, "not valid JSON"
            if not line.endswith(b"\n"):
                if complaint:  # torn by a killed run
                    break
                line, repair = line + b"\n", True
            elif complaint:
                raise ValueError(f"{path}:{lineno}: {complaint}; this is not an output file of sample.py (move it "
                                 f"away or pass another --out)")
            lines[(str(row["id"]), row["sample"])] = (line, row)
            good += len(line)
    if own and (repair or good < path.stat().st_size):
        print(f"{path}: {'adding the missing final newline' if repair else 'dropping a torn last line'}",
              file=sys.stderr)
        if repair:
            with open_append(path) as f:
                f.write("\n")
        else:
            os.truncate(path, good)
    return lines


def part_files(out_path: Path) -> list[Path]:
    return sorted(out_path.parent.glob(f"{out_path.name}.part-*"))


def merge_parts(out_path: Path, rows: list[dict]):
    """Rank 0: the output and every part file, one line per (id, sample), in the input's order (lines of other
    ids after them), written atomically; then the parts are removed."""
    order = {str(row["id"]): i for i, row in enumerate(rows)}
    lines = read_lines(out_path, own=True)
    for part in part_files(out_path):
        lines = {**read_lines(part, own=False), **lines}
    keys = sorted(lines, key=lambda k: (order.get(k[0], len(order)), k[0] if k[0] not in order else "", k[1]))
    atomic_write(out_path, "".join(lines[k][0].decode() for k in keys))
    for part in part_files(out_path):
        part.unlink()


# what decides a completion, besides its prompt: what a resumed output must have been made with
STAMPED = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": None, "seed": 0}


def stamp(model, tok, settings: dict, template: str | None = None) -> dict:
    """The model (its files), the prompt format and the sampling settings that made an output file."""
    user_turn = template if template is not None else tok.init_kwargs.get("prompt_instruction", INSTRUCTION)
    template = tok.chat_template + "\0" + user_turn
    return {"model": getattr(model, "source", None),  # (model_digest: the weights' content, not their path)
            "prompt_format": hashlib.sha256(template.encode()).hexdigest()[:16],
            "sampling": {k: settings.get(k, default) for k, default in STAMPED.items()}}


def check_stamp(out_path: Path, made: dict, done: dict, rows: list[dict]):
    """Refuse to resume an output made otherwise: with another model, prompt format or sampling settings (its
    OUT.settings.json), or for other problem texts under the same ids (an edited problems file)."""
    path = out_path.with_name(out_path.stem + ".settings.json")
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise ValueError(f"{path} is damaged (not JSON); it says how {out_path} was made: delete both to start "
                             f"over") from None
        if old != made:
            flat = lambda d: {f"{k}.{kk}" if isinstance(v, dict) else k: vv for k, v in d.items()
                              for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)])}
            before, now = flat(old), flat(made)
            diff = [f"{k}: {before.get(k)} -> {v}" for k, v in now.items() if before.get(k) != v]
            raise ValueError(f"{out_path} holds completions made otherwise ({'; '.join(diff)}); pass another --out, "
                             f"or delete {out_path} and {path.name} to start over")
    elif done:
        raise ValueError(f"{out_path} holds completions but no {path.name} saying how they were made; pass another "
                         f"--out, or delete {out_path} to start over")
    problems = {str(r["id"]): r["problem"] for r in rows}
    for (pid, _), (_, row) in done.items():
        if pid in problems and row.get("problem") != problems[pid]:
            raise ValueError(f"{out_path}: id {pid} was sampled for another problem text (the problems file changed "
                             f"since); pass another --out, or delete {out_path} to start over")
    return path


def sample_file(model, tok, rows: list[dict], out_path, generate, n=1, progress=True, template=None, reads=None,
                **settings) -> list[dict]:
    """Generate n completions for each row ({"id", "problem", ...}) into out_path (JSON Lines) with `generate`
    (sample.generate), skipping what is already there; under torchrun each process takes every world-th row.
    Prompts (prompt_text with `template`) longer than the context are counted and skipped. Returns every row of the
    output file (on every process). reads: the file the rows came from, which none of the output's files may be."""
    out_path = Path(out_path)
    check_outputs({"the output": out_path, "its settings": out_path.with_name(out_path.stem + ".settings.json"),
                   "its lock": out_path.with_name(out_path.name + ".lock")}, {"the problems": reads})
    make_dirs(out_path.parent)
    # one run per output at a time (a second launch would append the same completions twice)
    with run_lock(out_path.with_name(out_path.name + ".lock"), f"the output {out_path}"):
        return sample_into(model, tok, rows, out_path, generate, n, progress, template, settings)


def sample_into(model, tok, rows, out_path: Path, generate, n, progress, template, settings) -> list[dict]:
    rank, world = rank_and_world()
    mine, done = out_path.with_name(f"{out_path.name}.part-{rank:05d}-of-{world:05d}"), {}
    for path in (out_path, *part_files(out_path)):  # what any number of processes made before
        done.update(read_lines(path, own=path == mine))
    made = stamp(model, tok, settings, template)
    stamp_path = check_stamp(out_path, made, done, rows)
    barrier()  # every process has read the files before any appends to its own
    if rank == 0:
        atomic_write(stamp_path, json.dumps(made, indent=1) + "\n")
    context = model.config.max_position_embeddings
    todo, too_long = [], []
    for row in rows[rank::world]:  # (a hostile size is skipped from its bytes, untokenized)
        ids = [] if surely_longer(tok, row["problem"], context) else prompt_ids(tok, row["problem"], template)
        if not ids or len(ids) >= context:
            too_long.append(str(row["id"]))
        elif any((str(row["id"]), j) not in done for j in range(n)):
            todo.append((row, ids))
    if too_long:
        print(f"sample: skipped {len(too_long)} prompt(s) longer than the context ({context} tokens): "
              f"{', '.join(too_long[:10])}", file=sys.stderr)
    with open_append(mine) as f:
        def write(i, j, c):
            row = todo[i][0]
            if (str(row["id"]), j) in done:
                return
            text = tok.decode(c.tokens, skip_special_tokens=True)
            line = {**row, "sample": j, "response": text, "tokens": len(c.tokens), "finish": c.finish}
            try:
                f.write(json.dumps(line) + "\n")
                f.flush()
            except OSError as e:  # a full disk: the completions written so far are kept, a rerun continues
                raise write_failed(mine, e, "run the same command again: it continues from the completions "
                                            "already written") from None
        generate(model, [ids for _, ids in todo], n=n, stop_ids=stop_ids(tok), on_finish=write,
                 progress=progress, **settings)
    barrier()  # every part is complete
    if rank == 0:
        merge_parts(out_path, rows)
    barrier()
    return read_jsonl(out_path, required=("id", "sample", "response"), types=OUTPUT_TYPES)


# -----------------------------------------------------------------------------
# the command line of sample.py (python sample.py --help)

def main(generate, argv=None):
    p = ArgumentParser(description="Batched generation: a paged KV cache with continuous batching (sample.py).")
    p.add_argument("--model", required=True, help="model directory (config.json, *.safetensors, tokenizer), the "
                   "chosen.json of a training run, or a run's folder (its latest checkpoint)")
    p.add_argument("--prompt", help="one problem, printed with its completion(s)")
    p.add_argument("--prompts", help="JSON Lines file, one {'id', 'problem'} per line")
    p.add_argument("--out", help="JSON Lines output for --prompts (appended; a rerun resumes)")
    p.add_argument("--samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--max_new_tokens", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=32, help="KV-cache slots (sequences decoded at once)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on a GPU, else float32")
    args = p.parse_args(argv)
    check_settings(vars(args))
    if bool(args.prompt) == bool(args.prompts) or bool(args.prompts) != bool(args.out):
        p.error("give either --prompt TEXT, or --prompts FILE with --out FILE")
    try:
        rows = args.prompts and read_jsonl(args.prompts, required=("problem",), types=PROBLEM_TYPES, unique="id")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    model, tok, rank = load_for_sampling(args.model, args.dtype)  # under torchrun (--prompts): every GPU its share
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, seed=args.seed, batch_size=args.batch_size)
    if args.prompt:
        ids = prompt_ids(tok, args.prompt)
        if len(ids) >= model.config.max_position_embeddings:
            sys.exit(f"error: the prompt has {len(ids)} tokens, more than the model's context "
                     f"({model.config.max_position_embeddings})")
        try:
            outs = generate(model, [ids], n=args.samples, stop_ids=stop_ids(tok), **settings)[0]
        except ValueError as e:  # logits that are not finite
            sys.exit(f"error: {args.model}: {e}")
        for j, c in enumerate(outs):
            text = tok.decode(c.tokens, skip_special_tokens=True)
            print(f"--- sample {j} ({len(c.tokens)} tokens, {c.finish})\n{text}")
        return
    for k, row in enumerate(rows):
        row.setdefault("id", k)  # a prompts file without ids is keyed by line order
    try:
        out = sample_file(model, tok, rows, args.out, generate, n=args.samples, reads=args.prompts, **settings)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if rank == 0:
        print(f"sample: {len(out)} completions in {args.out}")
    if dist.is_initialized():
        dist.destroy_process_group()


def command(generate):
    """`python sample.py`: main() as a script runs, an interrupt or a file system error ending in one line."""
    run(lambda: main(generate), "every completion written so far is kept; the same command continues from them")
