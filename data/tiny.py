"""
Tiny stand-ins for the real models, made locally (nothing is downloaded): a byte-level tokenizer with
the R1 chat format, and random Qwen2 / Llama / Qwen3 checkpoints saved by transformers. Tests, the demo
and `make reproduce-tiny` use them.

    python data/tiny.py --out_dir out/tiny-qwen2 --family qwen2 --seed 0
    python data/tiny.py --answer_key fit.jsonl --problems a.jsonl b.jsonl --style long --every 3

A random model answers nothing correctly, so every stage of `make reproduce-tiny` that keeps correct
answers would keep none. The answer key is what the stand-ins are briefly fitted to (with train.py) so that
they get some problems right: the long stand-in answers two problems in three at length, the short one
answers the easy problems (and one dev problem in three) at once. Their accuracy means nothing; it only
gives the chain real correct and wrong answers to work with.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (PROBLEM_TYPES, ArgumentParser, at_least, atomic_write, check_outputs, check_settings,  # noqa: E402
                    jsonl_text, make_dirs, read_jsonl, run, usual_mode, write_failed)

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
SPECIAL = [BOS, EOS, "<｜User｜>", "<｜Assistant｜>"]
THINK = ["<think>", "</think>"]  # single tokens, but not special (as in R1): decoding keeps them

# The R1-Distill chat format, reduced to what nanoTLDR renders: BOS, user turn, assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)


def make_tokenizer(alphabet: str | None = None):
    """A transformers tokenizer: one token per character of `alphabet` (or per byte when None) plus the
    R1 special tokens. Character-level keeps a tiny model's job easy and token counts easy to read."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    if alphabet is None:
        vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    else:
        chars = sorted(set(alphabet))
        tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(["<unk>"] + chars)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    tok.add_tokens(THINK)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   chat_template=CHAT_TEMPLATE)


def make_model(out, family="qwen2", vocab_size=None, tokenizer=None, hidden=64, layers=2, heads=4, kv_heads=2,
               intermediate=128, context=1024, seed=0, init_std=0.02):
    """Save a random model (and the tokenizer) to `out` with transformers' own save_pretrained, written beside it
    and renamed into place (a failed write leaves nothing)."""
    import shutil
    import tempfile
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config
    tokenizer = tokenizer or make_tokenizer()
    common = dict(vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=context, initializer_range=init_std,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = {
        "qwen2": lambda: Qwen2Config(**common, rope_theta=10000.0, tie_word_embeddings=True),
        "llama": lambda: LlamaConfig(**common, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": context // 8}),
        "qwen3": lambda: Qwen3Config(**common, head_dim=hidden // heads * 2, rope_theta=1000000.0),
    }[family]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out = Path(out)
    make_dirs(out.parent)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        usual_mode(tmp, directory=True)  # (mkdtemp's 0700)
        shutil.rmtree(out, ignore_errors=True)  # (a stand-in made again)
        os.replace(tmp, out)
    except OSError as e:
        raise write_failed(out, e) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def answer_key(problem_files, out, style, every):
    """Training rows {"problem", "response"} for the problems of the files (all of them when every is 1, else
    the ones whose position i has i % every != 0 for "long", == 0 for "short"). Long responses think at
    length before the boxed answer; short ones answer at once, as a model without a think block does."""
    rows = []
    for path in problem_files:
        for i, problem in enumerate(read_jsonl(path, required=("id", "problem", "answer"), types=PROBLEM_TYPES)):
            if every > 1 and (i % every == 0) == (style == "long"):
                continue
            boxed = f"\\boxed{{{problem['answer']}}}"
            response = (f"Let me think step by step.\nWait, let me verify.\nLet me check again.\n</think>\n\n{boxed}"
                        if style == "long" else f"The answer is {boxed}.")
            rows.append({"id": problem["id"], "problem": problem["problem"], "response": response})
    atomic_write(out, jsonl_text(rows))
    return rows


def main():
    p = ArgumentParser(description="save a tiny random model (with a byte-level R1-format tokenizer, "
                                            "or the one in --tokenizer), or write an answer key to fit one to")
    p.add_argument("--out_dir", help="where to save the model")
    p.add_argument("--answer_key", help="instead: write the answer key (JSON Lines) of --problems here")
    p.add_argument("--problems", nargs="+", help="answer key: JSON Lines files of problems with answers")
    p.add_argument("--style", choices=["long", "short"], default="long")
    p.add_argument("--every", type=int, default=1, help="answer key: leave out positions by i %% every (1: none)")
    p.add_argument("--family", default="qwen2", choices=["qwen2", "llama", "qwen3"])
    p.add_argument("--tokenizer", help="a tokenizer directory to use instead of the byte-level one")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=128)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    check_settings(vars(args), {k: at_least(1) for k in ("every", "hidden", "layers", "heads", "kv_heads",
                                                          "intermediate", "context")} | {"seed": at_least(0)})
    if args.answer_key:
        for f in args.problems or []:
            check_outputs({"--answer_key": args.answer_key}, {"--problems": f})
        try:
            rows = answer_key(args.problems, args.answer_key, args.style, args.every)
        except (OSError, ValueError) as e:
            sys.exit(f"error: {e}")
        print(f"{args.answer_key}: {len(rows)} {args.style} answers")
        return
    if not args.out_dir:
        p.error("--out_dir is required")
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    print(make_model(args.out_dir, args.family, tokenizer=tokenizer, hidden=args.hidden, layers=args.layers,
                     heads=args.heads, kv_heads=args.kv_heads, intermediate=args.intermediate, context=args.context,
                     seed=args.seed))


if __name__ == "__main__":
    run(main, "a model is saved whole or not at all; run the same command again")
