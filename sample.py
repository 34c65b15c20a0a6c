"""
Batched generation with a preallocated KV cache and continuous batching: when a row finishes (a stop
token or its token limit) a waiting prompt takes its slot, so long and short answers share the batch.

    python sample.py --model DIR --prompt "What is 7 * 8?"
    python sample.py --model DIR --prompts ../shared/data/aime24.jsonl --out out/aime24.jsonl \
        --n 8 --temperature 0.6 --top_p 0.95 --max_new_tokens 32768

The prompts file has one problem per line ({"id": ..., "problem": ...}); each finished completion is
appended to --out at once, and a rerun skips the (id, sample) pairs already there, so an interrupted run
loses nothing. From Python (this is what train.py and evaluate.py call):

    outs = generate(model, [prompt_ids(tok, "What is 7 * 8?")], max_new_tokens=512, stop_ids=stop_ids(tok))
    outs[0][0].tokens, outs[0][0].finish      # the completion of prompt 0, sample 0; "stop" or "length"

Sampling is reproducible and independent of the batch: the random number behind each token is a hash of
(seed, prompt tokens, sample number, step), so a completion is the same whatever else shares its batch,
and an interrupted run resumes with the completions it would have made.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch

from common import read_jsonl
from model import KVCache, Transformer, attention_summary

# DeepSeek's recommended instruction for math; the user turn carries it, the answer starts with "<think>\n".
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


# -----------------------------------------------------------------------------
# prompts, in the R1 chat format (shared with train.py so training and testing see the same text)

def load_tokenizer(path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json or tokenizer_config.json; a model directory "
                                f"needs its tokenizer files (copy them from the base model)")
    # tokenizer.json defines the tokenization completely; AutoTokenizer would instead pick a class from the
    # model's config.json (Qwen2Tokenizer), which re-derives its pre-tokenizer and can change what it encodes
    load = PreTrainedTokenizerFast if (path / "tokenizer.json").is_file() else AutoTokenizer
    tok = load.from_pretrained(str(path))
    if tok.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat template (tokenizer_config.json 'chat_template')")
    return tok


def prompt_text(tok, problem: str) -> str:
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


def prompt_ids(tok, problem: str) -> list[int]:
    # the template already starts with BOS: encoding with special tokens again would add a second one
    return tok(prompt_text(tok, problem), add_special_tokens=False)["input_ids"]


def example_ids(tok, problem: str, response: str) -> tuple[list[int], int]:
    """A training example: the prompt exactly as at generation time, then the response and EOS.
    Returns (ids, number of prompt tokens). The response is what the model writes after "<think>\n"."""
    prompt = prompt_ids(tok, problem)
    response = response.removeprefix("<think>\n")
    completion = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + completion, len(prompt)


def stop_ids(tok) -> list[int]:
    return [tok.eos_token_id]


# -----------------------------------------------------------------------------
# the engine

@dataclass
class Completion:
    tokens: list[int]   # generated ids, ending with the stop id when finish == "stop"
    finish: str         # "stop" or "length"


def uniforms(seed: int, keys: list[tuple]) -> torch.Tensor:
    """One uniform number in (0, 1) per key, a pure function of (seed, key): batch-independent randomness."""
    out = []
    for key in keys:
        h = hashlib.blake2b(repr((seed,) + key).encode(), digest_size=8).digest()
        out.append((int.from_bytes(h, "little") + 0.5) / 2**64)
    return torch.tensor(out, dtype=torch.float64)


def sample_tokens(logits, temperature, top_p, top_k, u) -> torch.Tensor:
    """Next token per row: argmax when temperature is 0, else inverse-CDF sampling with the given uniforms
    after temperature, top-k and top-p (the order transformers applies them in)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    probs, order = torch.softmax(logits, -1).sort(-1, descending=True)
    if top_k:
        probs[:, top_k:] = 0
    if top_p < 1.0:
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens: keep a token while that is < top_p
        probs[before >= top_p] = 0
    cdf = probs.double().cumsum(-1)
    pick = torch.searchsorted(cdf, (u.to(cdf.device) * cdf[:, -1])[:, None]).clamp_(max=probs.shape[1] - 1)
    return order.gather(1, pick).squeeze(1)


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], max_new_tokens: int, temperature=0.0, top_p=1.0,
             top_k=0, n=1, stop_ids=(), seed=0, batch_size=32, max_prefill_tokens=8192, on_finish=None,
             progress=False) -> list[list[Completion]]:
    """Generate n completions for every prompt (token ids). Returns outs[prompt][sample]."""
    cfg, device = model.config, model.lm_head.weight.device
    context = cfg.max_position_embeddings
    for i, p in enumerate(prompts):
        if not 0 < len(p) < context:
            raise ValueError(f"prompt {i} has {len(p)} tokens; it must have 1 to {context - 1} (the model's context)")
    stops = set(stop_ids)
    seqs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    limit = [min(max_new_tokens, context - len(prompts[i])) for i, _ in seqs]  # never run past the context
    max_len = min(max(len(p) for p in prompts) + max_new_tokens, context) if prompts else 0
    batch_size = max(1, min(batch_size, len(seqs)))
    cache = KVCache(cfg, batch_size, max_len, model.lm_head.weight.dtype, device)

    outs = [[None] * n for _ in prompts]
    generated = [[] for _ in seqs]
    waiting = deque(range(len(seqs)))
    slot_seq = [None] * batch_size      # the sequence in each slot
    length = [0] * batch_size           # tokens of each slot already in the cache
    t0, last_log, n_tokens, n_done = time.time(), time.time(), 0, 0

    def emit(slots, next_tokens):
        """Append the sampled tokens; retire finished sequences and free their slots."""
        nonlocal n_tokens, n_done
        for s, tok in zip(slots, next_tokens):
            q = slot_seq[s]
            generated[q].append(tok)
            n_tokens += 1
            done = "stop" if tok in stops else "length" if len(generated[q]) >= limit[q] else None
            if done:
                i, j = seqs[q]
                outs[i][j] = Completion(generated[q], done)
                slot_seq[s] = None
                n_done += 1
                if on_finish:
                    on_finish(i, j, outs[i][j])

    # randomness keyed by the prompt's content, not its index, so a resumed or reordered run samples the same
    prompt_key = [hashlib.blake2b(str(p).encode(), digest_size=8).hexdigest() for p in prompts] if temperature else None

    def next_tokens(hidden_last, slots):
        logits = model.lm_head(hidden_last)
        u = None
        if temperature:
            keys = []
            for s in slots:
                i, j = seqs[slot_seq[s]]
                keys.append((prompt_key[i], j, len(generated[slot_seq[s]])))
            u = uniforms(seed, keys)
        return sample_tokens(logits, temperature, top_p, top_k, u).tolist()

    while waiting or any(q is not None for q in slot_seq):
        free = [s for s in range(batch_size) if slot_seq[s] is None]
        admit = []
        while len(admit) < len(free) and waiting and (not admit or sum(len(prompts[seqs[q][0]]) for q in admit)
                                    + len(prompts[seqs[waiting[0]][0]]) <= max_prefill_tokens):
            admit.append(waiting.popleft())
        if admit:
            # prefill: the new prompts packed into one row (positions restart per prompt), each into its slot
            slots = free[:len(admit)]
            ids, pos, slot_of = [], [], []
            for s, q in zip(slots, admit):
                p = prompts[seqs[q][0]]
                ids += p
                pos += range(len(p))
                slot_of += [s] * len(p)
                slot_seq[s], length[s] = q, len(p)
            hidden = model(torch.tensor([ids], device=device), torch.tensor([pos], device=device),
                           cache, torch.tensor([slot_of], device=device))
            ends = torch.tensor(pos, device=device).eq(0).nonzero().flatten()[1:].tolist() + [len(ids)]
            emit(slots, next_tokens(hidden[0, [e - 1 for e in ends]], slots))
        else:
            # decode: one token for every active slot
            slots = [s for s in range(batch_size) if slot_seq[s] is not None]
            last = [generated[slot_seq[s]][-1] for s in slots]
            positions = [length[s] for s in slots]
            hidden = model(torch.tensor(last, device=device)[:, None], torch.tensor(positions, device=device)[:, None],
                           cache, torch.tensor(slots, device=device)[:, None])
            for s in slots:
                length[s] += 1
            emit(slots, next_tokens(hidden[:, 0], slots))
        if progress and (time.time() - last_log > 5 or n_done == len(seqs)):
            last_log = time.time()
            print(f"sample: {n_done}/{len(seqs)} done | {n_tokens} tokens | "
                  f"{n_tokens / (last_log - t0):.1f} tok/s", file=sys.stderr, flush=True)
    return outs


# -----------------------------------------------------------------------------
# resumable files: a completion is one line, appended as soon as it is done

def done_keys(out_path: Path) -> set:
    """(id, sample) pairs already in an output file. A torn last line (a killed run) is cut off."""
    if not out_path.exists():
        return set()
    keys, good = set(), 0
    with open(out_path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
                keys.add((str(row["id"]), row["sample"]))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                if line.endswith(b"\n"):
                    raise ValueError(f"{out_path}: line {len(keys) + 1} is malformed; this is not an output "
                                     f"file of sample.py (move it away or pass another --out)") from None
                break
            good += len(line)
    if good < out_path.stat().st_size:
        print(f"{out_path}: dropping a torn last line from an interrupted run", file=sys.stderr)
        os.truncate(out_path, good)
    return keys


def sample_file(model, tok, rows: list[dict], out_path, n=1, progress=True, **settings) -> list[dict]:
    """Generate n completions for each row ({"id", "problem", ...}) into out_path (JSON Lines, appended
    as each finishes), skipping what is already there. Prompts longer than the context are counted and
    skipped. Returns every row of the output file."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(out_path)
    context = model.config.max_position_embeddings
    todo, too_long = [], []
    for row in rows:
        ids = prompt_ids(tok, row["problem"])
        if len(ids) >= context:
            too_long.append(str(row["id"]))
        elif any((str(row["id"]), j) not in done for j in range(n)):
            todo.append((row, ids))
    if too_long:
        print(f"sample: skipped {len(too_long)} prompt(s) longer than the context ({context} tokens): "
              f"{', '.join(too_long[:10])}", file=sys.stderr)
    with open(out_path, "a") as f:
        def write(i, j, c: Completion):
            row = todo[i][0]
            if (str(row["id"]), j) in done:
                return
            text = tok.decode(c.tokens, skip_special_tokens=True)
            f.write(json.dumps({**row, "sample": j, "response": text, "tokens": len(c.tokens), "finish": c.finish}) + "\n")
            f.flush()
        generate(model, [ids for _, ids in todo], n=n, stop_ids=stop_ids(tok), on_finish=write,
                 progress=progress, **settings)
    return read_jsonl(out_path, required=("id", "sample", "response"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model directory (config.json, *.safetensors, tokenizer)")
    p.add_argument("--prompt", help="one problem, printed with its completion(s)")
    p.add_argument("--prompts", help="JSON Lines file, one {'id', 'problem'} per line")
    p.add_argument("--out", help="JSON Lines output for --prompts (appended; a rerun resumes)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--max_new_tokens", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=32, help="KV-cache slots (sequences decoded at once)")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if bool(args.prompt) == bool(args.prompts) or bool(args.prompts) != bool(args.out):
        p.error("give either --prompt TEXT, or --prompts FILE with --out FILE")
    try:
        rows = read_jsonl(args.prompts, required=("problem",)) if args.prompts else None
        tok = load_tokenizer(args.model)
        model = Transformer.from_pretrained(args.model, dtype=getattr(torch, args.dtype), device=args.device)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(attention_summary(args.device, model.lm_head.weight.dtype), file=sys.stderr)
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, seed=args.seed, batch_size=args.batch_size)
    if args.prompt:
        ids = prompt_ids(tok, args.prompt)
        if len(ids) >= model.config.max_position_embeddings:
            sys.exit(f"error: the prompt has {len(ids)} tokens, more than the model's context "
                     f"({model.config.max_position_embeddings})")
        for j, c in enumerate(generate(model, [ids], n=args.n, stop_ids=stop_ids(tok), **settings)[0]):
            print(f"--- sample {j} ({len(c.tokens)} tokens, {c.finish})\n{tok.decode(c.tokens, skip_special_tokens=True)}")
        return
    for k, row in enumerate(rows):
        row.setdefault("id", k)  # a prompts file without ids is keyed by line order
    try:
        out = sample_file(model, tok, rows, args.out, n=args.n, **settings)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"sample: {len(out)} completions in {args.out}")


if __name__ == "__main__":
    main()
