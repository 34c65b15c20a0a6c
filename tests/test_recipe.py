"""The recipes against the official release: config/official.json holds every setting's official value with its
source (file:line in github zzli2022/TLDR at a460888), and a reason wherever ours differs. The resolved recipes must
match it, and the README's table must be its rendering, so that a drift fails here rather than misleads a reader."""
import dataclasses
import json
from pathlib import Path

import pytest

import train
from common import read_settings

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = json.loads((ROOT / "config" / "official.json").read_text())
RECIPES = {"7b": ["config/r1_7b.py"], "14b": ["config/r1_14b.py"], "static": ["config/r1_7b.py", "config/static.py"]}


def resolved(name):
    return dataclasses.asdict(read_settings(train.TrainConfig, [str(ROOT / f) for f in RECIPES[name]]))


def cell(x):
    return "-" if x is None else json.dumps(x) if isinstance(x, bool) else str(x)


def readme_table() -> str:
    """The README's "Where the recipes differ from the official release" tables, rendered from config/official.json:
    every setting, and everything outside train.py, where ours is not the official (each with its reason)."""
    r7, r14, static = resolved("7b"), resolved("14b"), resolved("static")
    lines = ["| setting | official 7B / 14B | source | here (7B / 14B) | why |", "| --- | --- | --- | --- | --- |"]
    for row in OFFICIAL["recipe"]:
        official = cell(row["7b"]) if row["7b"] == row["14b"] else f"{cell(row['7b'])} / {cell(row['14b'])}"
        ours = cell(r7[row["setting"]]) if r7[row["setting"]] == r14[row["setting"]] else \
            f"{cell(r7[row['setting']])} / {cell(r14[row['setting']])}"
        if row.get("why"):
            lines.append(f"| `{row['setting']}` | {official} | {row['source']} | {ours} | {row['why']} |")
    lines += ["", "The static 1:1 ablation (`config/r1_7b.py config/static.py`):", "",
              "| setting | official | source | here | why |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{row['setting']}` | {cell(row['official']) or '(none)'} | {row['source']} | "
              f"{cell(static[row['setting']]) or '(none)'} | {row['why']} |" for row in OFFICIAL["static"] if row.get("why")]
    lines += ["", "Outside train.py:", "", "| what | official | here | why |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['what']} | {row['official']} | {row['ours']} | {row['why']} |"
              for row in OFFICIAL["elsewhere"] if row.get("why")]
    lines += ["", "Sources: " + "; ".join(f"{k} = `{v}`" for k, v in OFFICIAL["abbreviations"].items()) + "."]
    return "\n".join(lines)


@pytest.mark.parametrize("size", ["7b", "14b"])
def test_the_recipes_are_the_official_settings_or_say_why_not(size):
    ours = resolved(size)
    for row in OFFICIAL["recipe"]:
        official = row[size]
        assert row["source"], row
        if official is None:  # the setting does not apply to this recipe (loss_group under sequence)
            continue
        ours_row = row.get("ours", official)  # "ours": where we differ, on purpose, with a "why" (per size or both)
        want = ours_row[size] if isinstance(ours_row, dict) else ours_row
        assert ours[row["setting"]] == want, (size, row["setting"], ours[row["setting"]], want)
        if want != official:
            assert row.get("why"), f"{row['setting']}: ours differs from the official {official}: say why"


def test_the_static_arm_is_the_papers_or_says_why_not():
    ours = resolved("static")
    for row in OFFICIAL["static"]:
        assert row["source"], row
        if ours[row["setting"]] != row["official"]:
            assert row.get("why"), f"static {row['setting']}: {ours[row['setting']]} vs {row['official']}: say why"
        else:
            assert "why" not in row or row["setting"] == "dev", row


def test_every_difference_outside_train_py_has_a_source_and_the_14b_recipe_differs_only_where_it_must():
    assert all(row["official"] and row["ours"] for row in OFFICIAL["elsewhere"])
    r7, r14 = resolved("7b"), resolved("14b")
    assert {k for k in r7 if r7[k] != r14[k]} == {"model", "global_batch", "loss_norm", "dev_batch_size", "grad_clip",
                                                  "eps"}


def test_readme_shows_the_official_table():
    assert readme_table() in (ROOT / "README.md").read_text(), \
        "README: the recipe tables must read (paste):\n" + readme_table()


# -----------------------------------------------------------------------------
# the official 14B step, emulated: Hugging Face's model and loss as transformers 4.46.3 ran them under DeepSpeed


def official_14b_update(model_dir, examples, gpus, lr):
    """One optimizer step of the official 14B run on `examples`, each GPU accumulating its consecutive share one
    sequence at a time: HF's loss is the summed token loss over num_items_in_batch, the GPU's completion tokens over
    its accumulation steps (trainer.py:3612,3628-3633 of 4.46.3); DeepSpeed divides it by the accumulation steps
    once more (engine.py:1995-1996) and ZeRO averages the GPUs' gradients; clipped at HF's max_grad_norm 1.0, then
    torch's AdamW with HF's adam_epsilon 1e-8. Returns each Hugging Face tensor's update and the gradient norm."""
    import torch
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    steps = len(examples) // gpus
    for g in range(gpus):
        mine = examples[g * steps:(g + 1) * steps]
        num_items = torch.tensor(sum(len(ids) - n_prompt for ids, n_prompt in mine))
        for ids, n_prompt in mine:
            labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
            loss = hf(input_ids=torch.tensor([ids]), labels=labels, num_items_in_batch=num_items).loss
            (loss / steps).backward()  # DeepSpeed's scale_wrt_gas
    for p in hf.parameters():
        p.grad /= gpus
    norm = torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0).item()
    torch.optim.AdamW(hf.parameters(), lr=lr, eps=1e-8, weight_decay=0.0).step()
    return {k: v - before[k] for k, v in hf.state_dict().items()}, norm


def our_update(model_dir, examples, cfg, grad_clip, eps):
    """One optimizer step of train.py's (loss_norm group) on the same examples, as Hugging Face tensors' updates."""
    import torch
    import checkpoint
    import model as M
    m = M.Transformer.from_pretrained(model_dir).train()
    before = {k: v.clone() for k, v in m.tensors().items()}
    scales = train.token_scales(examples, cfg.loss_norm, cfg.loss_group)
    train.forward_backward(m, examples, scales, train.split_and_pack(examples, 1, cfg.row_tokens), 0, grad_clip, "cpu")
    torch.optim.AdamW(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=eps,
                      weight_decay=cfg.weight_decay).step()
    out = {}
    for name, t in m.tensors().items():
        parts = checkpoint.hf_parts(m.config, name)
        out.update({hf: d for (hf, _), d in zip(parts, (t - before[name]).split([n or len(t) for _, n in parts]))})
    return out


@pytest.mark.parametrize("init_std, official_clips", [(0.02, False), (0.3, True)])
def test_the_14b_recipe_takes_the_official_step(tmp_path, init_std, official_clips):
    """config/r1_14b.py's grad_clip 4.0 and eps 4e-8 make our step the official one, whose gradient was 1/4 of ours:
    with a gradient norm between 1 and 4 (the official run did not clip) and above 4 (it did). Back at 1.0 / 1e-8
    (either one) the update differs by tenths of the lr; the equality holds to fp32 round-off (per element, the
    update over lr is AdamW's first step, in [-1, 1])."""
    import prompts
    import tiny
    import checkpoint
    tiny.make_model(tmp_path / "model", "qwen2", seed=0, init_std=init_std)
    tok = checkpoint.load_tokenizer(tmp_path / "model")
    # 2 GPUs x 4 accumulated sequences of varied lengths: the 14B run's shape (8 GPUs x 4) at a quarter of the width
    examples = [prompts.example_ids(tok, f"{a}*{b}", f"{a} times {b}. " + "Wait, let me check. " * (a * b % 9)
                                   + f"</think>\n\n\\boxed{{{a * b}}}")
                for a, b in [(1, 2), (3, 4), (2, 5), (4, 4), (5, 3), (6, 1), (7, 2), (8, 3)]]
    cfg = read_settings(train.TrainConfig, [str(ROOT / "config" / "r1_14b.py"), "--global_batch=8", "--lr=1e-3"])
    assert (cfg.loss_norm, cfg.loss_group) == ("group", 4)
    official, norm = official_14b_update(tmp_path / "model", examples, 2, cfg.lr)
    assert (norm > 1.0) == official_clips and 4 * norm > 1.0  # (ours, 4 x norm, is clipped at 1.0 in both cases)
    gap = lambda ours: max((ours[k] - official[k]).abs().max().item() / cfg.lr for k in ours)
    assert gap(our_update(tmp_path / "model", examples, cfg, cfg.grad_clip, cfg.eps)) < 1e-2
    for grad_clip, eps in [(1.0, cfg.eps), (cfg.grad_clip, 1e-8)] + ([] if official_clips else [(1.0, 1e-8)]):
        assert gap(our_update(tmp_path / "model", examples, cfg, grad_clip, eps)) > 5e-2, (grad_clip, eps)
    # (when both clip, a unit-norm gradient is the same for both: 1.0 and 1e-8 together then agree, as they must)
