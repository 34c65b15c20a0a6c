"""
The report of a run: whether TLDR made the model think shorter without losing accuracy, in one table and two
figures, beside the paper's published numbers.

    python report.py out/r1_7b                     # make report RUN=out/r1_7b (make reproduce-7b ends with it)
    python report.py out/demo                      # make demo ends with it

RUN is a folder as the Makefile lays it out: bounds.json; tldr/ and static/ (train.py runs: metrics.jsonl,
chosen.json, checkpoints whose state names the data they trained on); the training data (official/system1.jsonl
and system2.jsonl, the paper's; system1.jsonl and system2.jsonl, built); eval/base, eval/tldr, eval/static (and
eval/short in the demo), each with evaluate.py's summary.json. Written to RUN: report.md, report.json (the same
numbers), training.png (the mixture weights and the dev evaluations against the bounds, the chosen checkpoints
marked) and tradeoff.png (accuracy against mean output tokens per benchmark, with the published points). The
training data sets (official and built, whichever the run has or trained on) are counted in the long model's
tokenizer. What a run does not have (no static arm, an evaluation not run yet) is left out with a note.
"""

import json
import sys
from pathlib import Path

from common import ArgumentParser, atomic_write, read_json, read_jsonl
from evaluate import TITLES, quantile

ROOT = Path(__file__).resolve().parent
PUBLISHED = ROOT / "data" / "published.json"
BASELINES = ROOT / "data" / "baselines.json"
ARMS = {"base": "base model", "short": "short model M_S", "tldr": "TLDR", "static": "static 1:1 mixture"}
PUBLISHED_NAMES = {"tldr": "TLDR", "static": "static 1:1"}  # the arms' names in data/published.json


def read_file(path: Path, rows=False):
    """A JSON (rows: JSON Lines) file of the run, or None when it is not there; a damaged one is an error naming
    it."""
    if not path.is_file():
        return None
    try:
        return read_jsonl(path, required=()) if rows else read_json(path)
    except ValueError as e:
        raise SystemExit(f"error: {e}; make it again (delete it and rerun its make target)") from None


# -----------------------------------------------------------------------------
# the numbers

def arm_results(run: Path, notes: list) -> dict:
    """{arm: {"label", "model", "benchmarks": {bench: {accuracy, accuracy_paper, tokens[, by_level]}}}}"""
    arms = {}
    for key, label in ARMS.items():
        summary = read_file(run / "eval" / key / "summary.json")
        if summary is None:
            if key != "short":  # only the demo evaluates the short model
                notes.append(f"no {label}: {run / 'eval' / key / 'summary.json'} is not there")
            continue
        arms[key] = arm_summary(label, summary)
    for name, label in baselines(run).items():  # make baselines: released checkpoints of rival methods
        arms[name] = arm_summary(label, read_file(run / "eval" / name / "summary.json"))
    return arms


STATS = ("accuracy", "accuracy_paper", "accuracy_se", "tokens", "tokens_median", "tokens_p90", "cut_at_limit")


def arm_summary(label: str, summary: dict) -> dict:
    """What the report keeps of an evaluation summary: per benchmark the accuracies and the length statistics,
    and the protocol it was measured with."""
    settings = summary.get("settings", {})
    protocol = {k: settings.get(k) for k in ("protocol", "temperature", "top_p", "max_new_tokens", "seed", "samples")}
    return {"label": label, "model": summary["model"], "protocol": protocol, "prompts": settings.get("prompts", {}),
            "benchmarks": {b: {**{k: m.get(k) for k in STATS}, **({"by_level": m["by_level"]} if "by_level" in m
                                                                  else {})}
                           for b, m in summary["benchmarks"].items()}}


def baselines(run: Path) -> dict:
    """{eval folder name: label} of the rival checkpoints evaluated into RUN/eval (make baselines), in the order of
    data/baselines.json."""
    listed = json.loads(BASELINES.read_text())["baselines"]
    return {f"baseline-{b['name']}": b["name"] for b in listed if (run / "eval" / f"baseline-{b['name']}" /
                                                                     "summary.json").is_file()}


def changes(arms: dict) -> dict:
    """Against the base model, per arm and benchmark, and on average over the benchmarks (the headline)."""
    if "base" not in arms:
        return {}
    out = {}
    for key, arm in arms.items():
        if key == "base":
            continue
        per = {b: {"accuracy_change": m["accuracy"] - arms["base"]["benchmarks"][b]["accuracy"],
                   "token_reduction": 1 - m["tokens"] / arms["base"]["benchmarks"][b]["tokens"]}
               for b, m in arm["benchmarks"].items() if b in arms["base"]["benchmarks"]
               and m["tokens"] and arms["base"]["benchmarks"][b]["tokens"]}
        if per:
            mean = lambda k: sum(x[k] for x in per.values()) / len(per)
            out[key] = {"benchmarks": per, "mean": {"accuracy_change": mean("accuracy_change"),
                                                    "token_reduction": mean("token_reduction")}}
    return out


def training_runs(run: Path, notes: list) -> dict:
    """Per fine-tuning arm: the mixture weights per step, its dev evaluations, the checkpoint the rule chose, and
    the model and training files it began with (its latest checkpoint's state)."""
    out = {}
    for key in ("tldr", "static"):
        metrics = read_file(run / key / "metrics.jsonl", rows=True)
        if not metrics:
            notes.append(f"no {ARMS[key]} training run: {run / key / 'metrics.jsonl'} is not there")
            continue
        chosen = read_file(run / key / "chosen.json")
        states = sorted((run / key).glob("step_*/train_state/state.json"))
        state = read_file(states[-1]) if states else {}
        out[key] = {"weights": [[m["step"], m["w_short"]] for m in metrics if "loss" in m],
                    "evals": [[m["step"], m["dev_tokens"], m["dev_acc"]] for m in metrics if "dev_acc" in m],
                    "chosen": chosen and {k: chosen[k] for k in ("step", "dev_tokens", "dev_acc")},
                    "model": state.get("config", {}).get("model"),
                    "data": {k: f["path"] for k, f in state.get("data", {}).items() if k in ("system1", "system2")}}
    return out


OFFICIAL_SOURCE = "zzli2022/TLDR@"  # the "source" of every row data/prepare.py --official writes


def training_data(run: Path, training: dict, bounds, notes: list) -> list[dict]:
    """Every training set the run trained on or holds (the paper's in RUN/official, the built ones in RUN): which
    data it is (official or built), its examples and its responses' lengths in the long model's tokenizer."""
    paths = {Path(p).resolve(): None for arm in training.values() for p in arm["data"].values()}
    paths.update({p.resolve(): None for p in [run / "official" / "system1.jsonl", run / "official" / "system2.jsonl",
                                              run / "system1.jsonl", run / "system2.jsonl"] if p.is_file()})
    model = next((arm["model"] for arm in training.values() if arm["model"]), (bounds or {}).get("long_model"))
    if not paths:
        return []
    try:
        from checkpoint import load_tokenizer
        tok = load_tokenizer(model)
    except (OSError, ValueError, TypeError) as e:
        notes.append(f"the training data are not counted: the long model's tokenizer ({model}) cannot be read ({e})")
        return []
    sets = []
    for path in paths:
        rows = read_file(path, rows=True)
        if not rows:
            continue
        texts = [r.get("response", "") for r in rows]
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        official = str(rows[0].get("source", "")).startswith(OFFICIAL_SOURCE)
        sets.append({"data": "official" if official else "built", "file": str(path), "examples": len(rows),
                     "tokens": sum(lengths) / len(lengths), "tokens_median": quantile(lengths, 0.5),
                     "tokens_p90": quantile(lengths, 0.9),
                     "trained_by": [key for key, arm in training.items()
                                    if str(path) in {str(Path(p).resolve()) for p in arm["data"].values()}]})
    return sets


def model_size(bounds) -> str | None:
    """7b or 14b when the long model of the bounds is one of the paper's (DeepSeek-R1-Distill-Qwen-7B / -14B)."""
    name = Path(str((bounds or {}).get("long_model", ""))).name.lower()
    return next((size for size in ("14b", "7b") if name.endswith(f"-{size}")), None)


def collect(run: Path, published) -> dict:
    """published: 7b or 14b, None to take the size from the long model's name, False for none."""
    notes = []
    arms = arm_results(run, notes)
    report = {"run": str(run), "arms": arms, "vs_base": changes(arms), "training": training_runs(run, notes),
              "bounds": read_file(run / "bounds.json"), "published": None, "notes": notes}
    report["data"] = training_data(run, report["training"], report["bounds"], notes)
    published = model_size(report["bounds"]) if published is None else published
    if published:
        table = json.loads(PUBLISHED.read_text())
        report["published"] = {"size": published, "source": table["source"], "claim": table["claim"],
                               "arms": {key: {b: {"accuracy": a / 100, "tokens": t} for b, (a, t) in
                                              table[published][name].items()}
                                        for key, name in PUBLISHED_NAMES.items() if name in table[published]}}
    return report


# -----------------------------------------------------------------------------
# the table

def pct(x, signed=False):
    return "-" if x is None else f"{100 * x + 0.0:+.1f}" if signed else f"{100 * x:.1f}"  # (+ 0.0: never "-0.0")


def tokens(x):
    return "-" if x is None else f"{x:.0f}"


def headline(report) -> list[str]:
    lines = []
    for key, change in report["vs_base"].items():
        mean = change["mean"]
        lines.append(f"- **{report['arms'][key]['label']}**: {pct(mean['token_reduction'])}% fewer output tokens than "
                     f"the base model on average over {len(change['benchmarks'])} benchmark(s), accuracy "
                     f"{pct(mean['accuracy_change'], True)} points.")
    if report["published"]:
        lines.append(f"- **The paper** ({report['published']['size']}): {report['published']['claim']}.")
    return lines or ["- no comparison with the base model: its evaluation is not there."]


def render(report) -> str:
    """report.md: everything in it is a number of report.json, formatted."""
    published = (report["published"] or {}).get("arms", {})
    lines = [f"# TLDR report: {report['run']}", "", *headline(report), "",
             "Accuracy % by the strict grader and, in parentheses, by the paper's rules (SkyThought); mean output "
             "tokens; change against the base model. Published: the paper's accuracy % / tokens.", "",
             "| benchmark | model | accuracy % (paper's rules) | mean tokens | accuracy vs base | tokens vs base | "
             "published |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    benches = list(dict.fromkeys(b for arm in report["arms"].values() for b in arm["benchmarks"]))
    for b in benches:
        for key, arm in report["arms"].items():
            m = arm["benchmarks"].get(b)
            if not m:
                continue
            change = report["vs_base"].get(key, {}).get("benchmarks", {}).get(b, {})
            pub = published.get(key, {}).get(b)
            lines.append(f"| {TITLES.get(b, b)} | {arm['label']} | {pct(m['accuracy'])} ({pct(m['accuracy_paper'])}) | "
                         f"{tokens(m['tokens'])} | {pct(change.get('accuracy_change'), True)} | "
                         f"{pct(-change['token_reduction'], True) + '%' if change else '-'} | "
                         f"{pct(pub['accuracy']) + ' / ' + tokens(pub['tokens']) if pub else '-'} |")
    levels = [(b, key, arm) for b in benches for key, arm in report["arms"].items()
              if "by_level" in arm["benchmarks"].get(b, {})]
    if levels:
        lines += ["", "By level:", "", "| benchmark | model | level | accuracy % | mean tokens |",
                  "| --- | --- | --- | ---: | ---: |"]
        lines += [f"| {TITLES.get(b, b)} | {arm['label']} | {lv} | {pct(x['accuracy'])} | {tokens(x['tokens'])} |"
                  for b, key, arm in levels for lv, x in arm["benchmarks"][b]["by_level"].items()]
    lines += length_lines(report, benches)
    lines += prompt_lines(report)
    lines += training_lines(report)
    lines += data_lines(report)
    if report["published"]:
        lines += ["", f"Published numbers: {report['published']['source']}."]
    if report["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", "![training run](training.png)", "", "![accuracy against tokens](tradeoff.png)"]
    return "\n".join(lines) + "\n"


def length_lines(report, benches) -> list[str]:
    """Per benchmark and model: the accuracy's standard error over problems and samples, the output lengths' mean,
    median and 90th percentile, and the share of answers cut at the cap (a compression that is truncation shows
    here)."""
    lines = ["", "Lengths: accuracy % ± its standard error; output tokens in the model's tokenizer; answers cut at "
                 "the cap.", "",
             "| benchmark | model | accuracy % ± s.e. | tokens: mean / median / p90 | cut at the cap |",
             "| --- | --- | ---: | ---: | ---: |"]
    for b in benches:
        for arm in report["arms"].values():
            m = arm["benchmarks"].get(b)
            if m:
                se = f" ± {pct(m['accuracy_se'])}" if m.get("accuracy_se") is not None else ""
                lines.append(f"| {TITLES.get(b, b)} | {arm['label']} | {pct(m['accuracy'])}{se} | "
                             f"{' / '.join(tokens(m.get(k)) for k in ('tokens', 'tokens_median', 'tokens_p90'))} | "
                             f"{pct(m.get('cut_at_limit'))}% |")
    return lines


def protocol_text(p: dict) -> str:
    samples = ", ".join(f"{TITLES.get(b, b)} {n}" for b, n in (p.get("samples") or {}).items())
    return (f"protocol {p.get('protocol')}: temperature {p.get('temperature')}, top_p {p.get('top_p')}, up to "
            f"{p.get('max_new_tokens')} new tokens, samples per problem {samples or '-'}, seed {p.get('seed')}")


def prompt_lines(report) -> list[str]:
    """The user turn each model was asked with, per benchmark ({problem} stands for the problem): one list when
    every model saw the same, else one per model."""
    seen = {key: json.dumps([arm["protocol"], arm["prompts"]]) for key, arm in report["arms"].items()}
    lines = []
    for value in dict.fromkeys(seen.values()):
        keys, (protocol, prompts) = [k for k in seen if seen[k] == value], json.loads(value)
        lines.append("")
        lines.append(f"{', '.join(report['arms'][k]['label'] for k in keys)}: {protocol_text(protocol)}; the "
                     f"user turn:")
        shown = {b: t.format(problem="{problem}").replace("\n", "\\n") for b, t in prompts.items()}
        lines += [f"- {TITLES.get(b, b)}: `{t}`" for b, t in shown.items()]
    return lines


def training_lines(report) -> list[str]:
    lines = []
    bounds = report["bounds"]
    if bounds:
        lines += ["", f"Bounds on the dev set: short model {tokens(bounds['short']['tokens'])} tokens at "
                      f"{pct(bounds['short']['accuracy'])}%, long model {tokens(bounds['long']['tokens'])} tokens at "
                      f"{pct(bounds['long']['accuracy'])}%; the choice rule needs dev accuracy above "
                      f"{pct(0.7 * bounds['long']['accuracy'])}%."]
    for key, run in report["training"].items():
        chosen = run["chosen"]
        data = sorted({d["data"] for d in report["data"] if key in d["trained_by"]})
        data = f"trained on the {' and '.join(data)} data; " if data else ""
        if not run["evals"]:  # the paper's static arm: no dev set, its final model is the one evaluated
            lines.append(f"- {ARMS[key]}: {data}no dev evaluation; its final checkpoint (step {run['weights'][-1][0]}) "
                         f"is the one evaluated.")
            continue
        lines.append(f"- {ARMS[key]}: {data}{len(run['evals'])} dev evaluations; " + (
            f"chosen step {chosen['step']} ({tokens(chosen['dev_tokens'])} dev tokens, dev accuracy "
            f"{pct(chosen['dev_acc'])}%)." if chosen else "no checkpoint passed the rule."))
    return lines


def data_lines(report) -> list[str]:
    if not report["data"]:
        return []
    lines = ["", "Training data: the paper's own files (official) or made by data/build.py (built); response tokens "
                 "in the long model's tokenizer.", "",
             "| data | file | examples | response tokens: mean / median / p90 | trained on by |",
             "| --- | --- | ---: | ---: | --- |"]
    for d in report["data"]:
        lines.append(f"| {d['data']} | {d['file']} | {d['examples']} | "
                     f"{' / '.join(tokens(d[k]) for k in ('tokens', 'tokens_median', 'tokens_p90'))} | "
                     f"{', '.join(ARMS[k] for k in d['trained_by']) or '-'} |")
    return lines


# -----------------------------------------------------------------------------
# the figures

STYLE = {"base": ("tab:orange", "o"), "short": ("tab:blue", "v"), "tldr": ("black", "o"), "static": ("tab:gray", "s")}


def plot_training(report, path: Path):
    """Mixture weights per step; dev mean tokens and dev accuracy per evaluation, against the bounds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    for key, run in report["training"].items():
        steps, w = zip(*run["weights"]) if run["weights"] else ((), ())
        ax1.plot(steps, w, color=STYLE[key][0], label=f"{ARMS[key]}: w_short (System-1)")
        ax1.plot(steps, [1 - x for x in w], color=STYLE[key][0], ls=":", label=f"{ARMS[key]}: w_long (System-2)")
        for ax, column in ((ax2, 1), (ax3, 2)):
            ax.plot([e[0] for e in run["evals"]], [e[column] for e in run["evals"]], marker=STYLE[key][1],
                    color=STYLE[key][0], label=ARMS[key])
            if run["chosen"]:
                ax.axvline(run["chosen"]["step"], color=STYLE[key][0], lw=1, ls="-.", label=f"{ARMS[key]}: chosen")
    bounds = report["bounds"]
    if bounds:
        ax2.axhline(bounds["long"]["tokens"], color="tab:orange", ls="--", label="T_L (long model)")
        ax2.axhline(bounds["short"]["tokens"], color="tab:blue", ls="--", label="T_S (short model)")
        ax3.axhline(bounds["long"]["accuracy"], color="tab:orange", ls="--", label="A_L (long model)")
        ax3.axhline(0.7 * bounds["long"]["accuracy"], color="tab:red", ls=":", label="0.7 A_L (choice rule)")
        ax3.axhline(bounds["short"]["accuracy"], color="tab:blue", ls="--", label="A_S (short model)")
    ax1.set(title="mixture weights", xlabel="step", ylim=(0, 1))
    ax2.set(title="dev mean output tokens", xlabel="step")
    ax3.set(title="dev accuracy", xlabel="step")
    for ax in (ax1, ax2, ax3):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save(fig, path)


def save(fig, path: Path):
    import io
    import matplotlib.pyplot as plt
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    atomic_write(path, png.getvalue())


def plot_tradeoff(report, path: Path):
    """Per benchmark, accuracy against mean output tokens: the arms, and the published points (hollow)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    benches = list(dict.fromkeys(b for arm in report["arms"].values() for b in arm["benchmarks"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(benches), figsize=(4 * len(benches), 3.6), squeeze=False)
    published = (report["published"] or {}).get("arms", {})
    for ax, b in zip(axes[0], benches):
        for key, arm in report["arms"].items():
            m = arm["benchmarks"].get(b)
            if m and m["tokens"] is not None:
                color, marker = STYLE.get(key, (None, "D"))  # a baseline: the next colour, a diamond, its name
                ax.scatter(m["tokens"], 100 * m["accuracy"], color=color, marker=marker, s=50, label=arm["label"])
                if key not in STYLE:
                    ax.annotate(arm["label"], (m["tokens"], 100 * m["accuracy"]), fontsize=7, xytext=(4, 4),
                                textcoords="offset points")
        for key, arms in published.items():
            if b in arms:
                ax.scatter(arms[b]["tokens"], 100 * arms[b]["accuracy"], facecolors="none", marker=STYLE[key][1],
                           edgecolors=STYLE[key][0], s=70, label=f"{ARMS[key]} (published)")
        ax.set(title=TITLES.get(b, b), xlabel="mean output tokens", ylabel="accuracy %")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save(fig, path)


def write_report(run: Path, published) -> dict:
    report = collect(run, published)
    if not report["arms"] and not report["training"]:
        raise SystemExit(f"error: {run} holds nothing to report: no evaluation (eval/<model>/summary.json for "
                         f"{', '.join(ARMS)}, or eval/baseline-<name>) and no training run (tldr/ or static/ "
                         f"metrics.jsonl); nothing was written. Is it a run's folder (make reproduce-7b, make demo)?")
    atomic_write(run / "report.json", json.dumps(report, indent=1) + "\n")
    text = render(report)
    atomic_write(run / "report.md", text)
    plot_training(report, run / "training.png")
    plot_tradeoff(report, run / "tradeoff.png")
    print(text)
    print(f"report: wrote {run / 'report.md'}, report.json, training.png, tradeoff.png")
    return report


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="the run folder (bounds.json, tldr/, static/, eval/)")
    p.add_argument("--published", choices=["auto", "none", "7b", "14b"], default="auto",
                   help="the paper's numbers of this model size beside the run's (auto: the size in the name of the "
                   "long model of bounds.json, if it is one of the paper's)")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not run.is_dir():
        sys.exit(f"error: {run}: no such run folder")
    return write_report(run, {"auto": None, "none": False}.get(args.published, args.published))


if __name__ == "__main__":
    from common import run
    run(main, "its files are written whole or not at all; run the same command again")
