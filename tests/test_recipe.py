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
        want = row.get("ours", official)  # "ours": where we differ, on purpose, with a "why"
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
    assert {k for k in r7 if r7[k] != r14[k]} == {"model", "global_batch", "loss_norm", "dev_batch_size"}


def test_readme_shows_the_official_table():
    assert readme_table() in (ROOT / "README.md").read_text(), \
        "README: the recipe tables must read (paste):\n" + readme_table()
