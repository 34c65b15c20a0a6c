"""
Resumable sampling outputs, split over processes: under torchrun every process answers every world-th prompt into
a part file of its own, a line appended as each completion finishes, and rank 0 merges the parts into the output
in the input's order. A rerun skips the (id, sample) pairs done in the output or in any part file, whatever the
number of processes that made them; on a CPU the output is the same bytes for any number of processes (on GPUs, for
the same number: sample.py's docstring says why). Beside the output,
OUT.settings.json says how its completions were made (model, settings, prompt): a rerun made otherwise is refused.
The command line of sample.py is here too (sample.py's docstring shows it).

    rows = sample_file(model, tok, [{"id": 0, "problem": "What is 7 * 8?"}], "out/x.jsonl", n=4, max_new_tokens=512)
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import sample
from checkpoint import load_tokenizer, model_path, surely_longer
from common import (ID, PROBLEM_TYPES, TEXT, ArgumentParser, atomic_write, check_outputs, check_settings, make_dirs,
                    open_append, read_jsonl, refuse_link, row_type_error, run, write_failed)
from common import lines as numbered_lines
from model import Transformer, attention_summary
from processes import barrier, rank_and_world, run_lock, start_processes
from sample import INSTRUCTION, Completion, generate, prompt_ids, stop_ids

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


def sample_file(model, tok, rows: list[dict], out_path, n=1, progress=True, template=None, reads=None,
                **settings) -> list[dict]:
    """Generate n completions for each row ({"id", "problem", ...}) into out_path (JSON Lines), skipping what is
    already there; under torchrun each process takes every world-th row. Prompts (prompt_text with `template`)
    longer than the context are counted and skipped. Returns every row of the output file (on every process).
    reads: the file the rows came from, which none of the output's files may be."""
    out_path = Path(out_path)
    check_outputs({"the output": out_path, "its settings": out_path.with_name(out_path.stem + ".settings.json"),
                   "its lock": out_path.with_name(out_path.name + ".lock")}, {"the problems": reads})
    make_dirs(out_path.parent)
    # one run per output at a time (a second launch would append the same completions twice)
    with run_lock(out_path.with_name(out_path.name + ".lock"), f"the output {out_path}"):
        return sample_into(model, tok, rows, out_path, n, progress, template, settings)


def sample_into(model, tok, rows, out_path: Path, n, progress, template, settings) -> list[dict]:
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
        def write(i, j, c: Completion):
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

def main(argv=None):
    p = ArgumentParser(description=sample.__doc__.split("\n\n")[0])
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
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    args = p.parse_args(argv)
    check_settings(vars(args))
    if bool(args.prompt) == bool(args.prompts) or bool(args.prompts) != bool(args.out):
        p.error("give either --prompt TEXT, or --prompts FILE with --out FILE")
    rank, _, device = start_processes()  # under torchrun (--prompts): every process answers its share
    try:
        rows = args.prompts and read_jsonl(args.prompts, required=("problem",), types=PROBLEM_TYPES, unique="id")
        model_dir = model_path(args.model)
        tok = load_tokenizer(model_dir)
        model = Transformer.from_pretrained(model_dir, dtype=getattr(torch, args.dtype), device=device)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if rank == 0:
        print(attention_summary(device, model.lm_head.weight.dtype), file=sys.stderr)
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
            sys.exit(f"error: {model_dir}: {e}")
        for j, c in enumerate(outs):
            text = tok.decode(c.tokens, skip_special_tokens=True)
            print(f"--- sample {j} ({len(c.tokens)} tokens, {c.finish})\n{text}")
        return
    for k, row in enumerate(rows):
        row.setdefault("id", k)  # a prompts file without ids is keyed by line order
    try:
        out = sample_file(model, tok, rows, args.out, n=args.samples, reads=args.prompts, **settings)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if rank == 0:
        print(f"sample: {len(out)} completions in {args.out}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    run(main, "every completion written so far is kept; the same command continues from them")
