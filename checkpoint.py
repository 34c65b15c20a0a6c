"""
The checkpoint format, in one place. A model directory is Hugging Face's: config.json and safetensors shards (with
an index above 5 GB), loadable by transformers and vLLM; model.py holds q/k/v and gate/up fused (FUSED below), so
reading concatenates and writing splits. A training checkpoint, step_NNNNNN/, is such a model directory (in the
base model's dtype, bf16 for R1-Distill, with the base model's tokenizer files) plus train_state/: state.json, the
float32 master weights and the AdamW state of every process (safetensors, no pickle). train_state/ is a
subdirectory so that vLLM, which loads every top-level *.safetensors, sees only the model. Every directory is
written beside its place and renamed into it: a killed process leaves the old one or the new one.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from common import atomic_write, jsonl_text, make_dirs, open_append, read_json, refuse_link, usual_mode, write_failed
from processes import Processes, barrier, full, local, rank_and_world

# -----------------------------------------------------------------------------
# Hugging Face weights

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def hf_parts(cfg, name: str) -> list[tuple[str, int | None]]:
    """The Hugging Face tensors our tensor `name` is made of, in order along its first dimension, with their rows
    (a tensor that is not fused: itself, rows None)."""
    module, leaf = name.rsplit(".", 1)             # model.layers.0.self_attn.qkv_proj, weight
    parent, _, kind = module.rpartition(".")
    if kind not in FUSED:
        return [(name, None)]
    q, kv, inter = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim, \
        cfg.intermediate_size
    return [(f"{parent}.{part}.{leaf}", n) for part, n in zip(FUSED[kind], (q, kv, kv) if kind == "qkv_proj"
                                                           else (inter, inter))]


def checkpoints(run: Path) -> list[Path]:
    """A training run's checkpoints (step_NNNNNN/), oldest first."""
    return sorted(p for p in Path(run).glob("step_*") if p.is_dir() and not p.is_symlink())


def model_path(path) -> Path:
    """The model directory that `path` names: a model directory; the chosen.json of a training run (the checkpoint
    the paper's rule chose); or a training run's folder (its latest checkpoint)."""
    path = Path(path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"{path}: no such file; train.py writes it at the end of a run in which a checkpoint "
                             f"passed the choice rule (dev accuracy > 0.7 x A_L): see {path.parent / 'metrics.jsonl'}")
        try:
            checkpoint = Path(json.loads(path.read_text())["checkpoint"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}); run the training again with "
                             f"--resume to rewrite it (it then only redoes the choice), or pass a checkpoint "
                             f"directory") from None
        if not (checkpoint / "config.json").is_file():
            raise ValueError(f"{path} names {checkpoint}, which is not a checkpoint (was it moved or pruned?)")
        return checkpoint
    steps = checkpoints(path) if not (path / "config.json").exists() else []
    return steps[-1] if steps else path


def read_config(path: Path) -> dict:
    """A model's config.json, its values checked (config_problem) before anything is built from it."""
    f = Path(path) / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no config.json here; pass a Hugging Face model directory "
                                f"(config.json + *.safetensors)")
    try:
        hf = read_json(f)
    except ValueError as e:
        raise ValueError(f"{e}; re-download the checkpoint") from None
    problem = config_problem(hf) if isinstance(hf, dict) else "not a JSON object"
    if problem:
        raise ValueError(f"{f}: {problem}: the file is damaged or not a model's; re-download the checkpoint")
    return hf


SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "head_dim", "max_position_embeddings")


def config_problem(hf: dict) -> str | None:
    """What is wrong with a config.json's values (its types and ranges), or None: whole numbers above 0 for the
    sizes, heads that divide the width and kv heads that divide the heads, positive floats for eps and theta."""
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    for key in SIZES:
        if hf.get(key) is not None and not (whole(hf[key]) and hf[key] > 0):
            return f"{key} must be a whole number above 0, got {json.dumps(hf[key])[:40]}"
    for key in ("rms_norm_eps", "rope_theta"):
        if key in hf and not (isinstance(hf[key], (int, float)) and not isinstance(hf[key], bool) and
                              math.isfinite(hf[key]) and hf[key] > 0):
            return f"{key} must be a number above 0, got {json.dumps(hf[key])[:40]}"
    heads, kv = hf.get("num_attention_heads"), hf.get("num_key_value_heads") or hf.get("num_attention_heads")
    if heads and not hf.get("head_dim") and hf.get("hidden_size", 0) % heads:
        return f"num_attention_heads={heads} does not divide hidden_size={hf['hidden_size']} (and no head_dim)"
    if heads and kv and heads % kv:
        return f"num_key_value_heads={kv} does not divide num_attention_heads={heads}"
    if not isinstance(hf.get("tie_word_embeddings", False), bool):
        return f"tie_word_embeddings must be true or false, got {json.dumps(hf['tie_word_embeddings'])[:40]}"
    return None


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
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a damaged file is named, not a traceback
        try:
            if (path / name).is_file():
                json.loads((path / name).read_text())
        except ValueError as e:
            raise ValueError(f"{path / name}: damaged ({e}); copy the tokenizer files from the base model "
                             f"again") from None
    try:
        tok = load.from_pretrained(str(path))
    except Exception as e:  # whatever else transformers finds wrong with the files
        raise ValueError(f"{path}: cannot load its tokenizer ({type(e).__name__}: {e}); copy the tokenizer files "
                         f"from the base model again") from None
    if tok.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat template (tokenizer_config.json 'chat_template')")
    return tok


def surely_longer(tok, text: str, tokens: int) -> bool:
    """Is `text` more than `tokens` tokens, known from its length in bytes alone (no token of the tokenizer is
    longer than its longest)? A hostile line is then skipped before the tokenizer ever holds it."""
    if not hasattr(tok, "longest_token"):
        tok.longest_token = max(len(t.encode()) for t in tok.get_vocab())
    return len(text.encode()) > tokens * tok.longest_token


def model_digest(path: Path, blocks=16, block=1 << 16) -> str:
    """What identifies a model directory's weights, by content and cheaply: its config.json, and of every
    safetensors file its size, its header (every tensor's name, dtype, shape and offsets) and `blocks` blocks read
    at even intervals. A model re-trained, edited or re-downloaded changes it; the same files moved do not."""
    path = Path(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        size = f.stat().st_size
        with open(f, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
            h.update(f.name.encode() + size.to_bytes(8, "little") + fh.read(min(header, size)))
            for i in range(blocks):
                fh.seek(size * i // blocks)
                h.update(fh.read(block))
    return h.hexdigest()[:16]


def saved_dtype(hf: dict) -> torch.dtype:
    """The dtype a model's weights were published in (config.json): R1-Distill bf16, the tiny test models fp32.
    Fine-tuned checkpoints are written in it, so they are as large as the model they came from."""
    name = hf.get("dtype") or hf.get("torch_dtype") or "bfloat16"
    return getattr(torch, name) if isinstance(getattr(torch, str(name), None), torch.dtype) else torch.bfloat16


class Weights:
    """The safetensors tensors of a model directory, read one at a time (the files are memory-mapped), whole or
    a range of rows: a process of a sharded run reads only the rows of its own shard."""

    def __init__(self, path, files=None):
        from safetensors import safe_open
        self.path = Path(path)
        index = self.path / "model.safetensors.index.json"
        try:
            if files is None:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
                    sorted(p.name for p in self.path.glob("*.safetensors"))
        except (ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e}); re-download the checkpoint") from None
        if not files:
            raise FileNotFoundError(f"{self.path}: no *.safetensors weights (PyTorch .bin checkpoints are not read: "
                                    f"they are pickles)")
        self.files, self.file_of = {}, {}
        for name in files:
            try:
                self.files[name] = f = safe_open(str(self.path / name), framework="pt", device="cpu")
            except Exception as e:  # SafetensorError, OSError: a missing, truncated or corrupt file
                raise ValueError(f"{self.path / name}: cannot read the weights ({e}); the file is missing or "
                                 f"corrupt, re-download it") from None
            self.file_of.update({key: name for key in f.keys()})

    def keys(self):
        return list(self.file_of)

    def check(self, expected: dict, tied: bool, where: str):
        """Every tensor the config needs, of the config's shape and a floating dtype, before anything is read: a
        file of another model or an edited shard is named with the tensor, not met as a copy's size mismatch."""
        found = {k: v for k, v in self.file_of.items() if not (tied and k == "lm_head.weight")}
        check_names(expected, found, where)
        for key, shape in expected.items():
            meta = self.files[found[key]].get_slice(key)
            if tuple(meta.get_shape()) != shape or meta.get_dtype() not in ("F16", "BF16", "F32", "F64"):
                raise ValueError(f"{self.path / found[key]}: {key} is {meta.get_dtype()} {tuple(meta.get_shape())}, "
                                 f"its config.json needs a float tensor of shape {shape}: the file is not this model's "
                                 f"or was changed; copy or download the checkpoint again")

    def read_ours(self, cfg, name: str, dtype, device, rows=None) -> torch.Tensor:
        """Our tensor `name` (rows = (start, end): only those rows), read from the Hugging Face tensors it is made
        of: a process of a sharded run reads only the rows of its shard of each."""
        parts, start, lo, hi = [], 0, *(rows or (0, math.inf))
        for hf, n in hf_parts(cfg, name):
            if n is None:
                return self.read(hf, dtype, device, rows)
            a, b = min(max(lo - start, 0), n), min(max(hi - start, 0), n)  # this part's rows within [lo, hi)
            if a < b:  # (a part outside the rows is not read at all)
                parts.append(self.read(hf, dtype, device, None if rows is None else (a, b)))
            start += n
        if not parts:  # no rows here: FSDP2 gives a process an empty shard when the rows run out
            shape = self.files[self.file_of[hf]].get_slice(hf).get_shape()
            return torch.empty((0, *shape[1:]), dtype=dtype, device=device)
        return torch.cat(parts)

    def read(self, key, dtype, device, rows=None) -> torch.Tensor:
        """The tensor `key` (rows = (start, end): only those rows of its first dimension) as dtype on device."""
        name = self.file_of[key]
        try:
            t = self.files[name].get_tensor(key) if rows is None else self.files[name].get_slice(key)[rows[0]:rows[1]]
        except Exception as e:
            raise ValueError(f"{self.path / name}: cannot read {key} ({e}); the file is damaged: download or "
                             f"copy it again") from None
        t = t.to(device=device, dtype=dtype)
        if not torch.isfinite(t).all():  # (one pass over what was just read)
            raise ValueError(f"{self.path / name}: {key} holds values that are not finite (NaN or inf): the weights "
                             f"of a diverged run, or a damaged file; use an earlier checkpoint or download it again")
        return t


def check_names(expected, found, where: str):
    """The tensor names a checkpoint holds against those its config.json needs."""
    missing, unexpected = set(expected) - set(found), set(found) - set(expected)
    if missing or unexpected:
        raise ValueError(f"{where}: checkpoint does not match its config.json: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]} (is the download complete?)")


def write_weights(cfg, tensors: dict, fetch, directory: Path, dtype, max_shard_bytes=5 * 2**30):
    """config.json + safetensors in the Hugging Face layout, sharded with an index above max_shard_bytes.
    tensors: {our name: tensor} (Transformer.tensors(); their shapes plan the files); fetch(tensor) gives it whole,
    called once per tensor, in order, and only one file's tensors are held at a time: a sharded run gathers its
    weights one tensor at a time."""
    from safetensors.torch import save_file
    directory, itemsize = Path(directory), dtype.itemsize
    shards, size = [[]], 0  # our names, grouped into files by the size of their Hugging Face tensors
    for key, t in tensors.items():
        nbytes = t.numel() * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, keys in zip(names, shards):
        pieces = {}
        for k in keys:
            t = fetch(tensors[k]).detach().to(dtype)
            parts = hf_parts(cfg, k)
            for (hf, _), piece in zip(parts, t.split([n or len(t) for _, n in parts])):
                pieces[hf] = piece.contiguous().cpu()
        save_file(pieces, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(pieces, name))
    if len(shards) > 1:
        total = sum(t.numel() * itemsize for t in tensors.values())
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    dtype_name = str(dtype).removeprefix("torch.")
    (directory / "config.json").write_text(json.dumps({**cfg.hf, "torch_dtype": dtype_name, "dtype": dtype_name},
                                                      indent=2))


def save_model(cfg, tensors: dict, path, dtype, max_shard_bytes=5 * 2**30):
    """A Hugging Face model directory at `path` (write_weights), written beside it and renamed into place."""
    path = Path(path)
    make_dirs(path.parent)
    refuse_link(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    usual_mode(tmp, directory=True)  # mkdtemp's 0700 would keep the model from the other users of a cluster
    try:
        write_weights(cfg, tensors, lambda t: t, tmp, dtype, max_shard_bytes)
        commit_dir(tmp, path)
    except BaseException:  # a full disk: no half-written directory is left holding the space
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit_dir(tmp: Path, path: Path):
    """Put a fully written temporary directory in place of `path` by renaming: a killed process leaves
    either the previous `path` or the new one, never a half-written directory under that name."""
    for f in [Path(tmp), *Path(tmp).rglob("*")]:
        usual_mode(f, directory=f.is_dir())  # safetensors and mkdtemp create 0600 / 0700: others could not read
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if path.exists():  # move the old one aside first, drop it once the new one is in place
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


# -----------------------------------------------------------------------------
# training checkpoints and resume

def tokenizer_files(model_dir: Path) -> list[Path]:
    """Everything of the base model directory but its weights and config: tokenizer files, chat template,
    generation config. Copied into every checkpoint so that it is a complete model directory."""
    skip = {"config.json", "model.safetensors.index.json"}
    return [f for f in Path(model_dir).iterdir() if f.is_file() and f.name not in skip
            and f.suffix not in (".safetensors", ".bin", ".pt", ".pth")]


def shard_file(kind: str, rank: int, world: int) -> str:
    return f"{kind}-rank{rank:05d}-of-{world:05d}.safetensors"


def save_checkpoint(model, opt, cfg, state: dict, out_dir: Path, step: int, chosen_step, proc: Processes):
    """step_NNNNNN/, written into a temporary directory and renamed into place; a write that fails (a full disk,
    an I/O error) removes the temporary directory and stops with one line, the last complete checkpoint untouched."""
    from safetensors import SafetensorError
    final, tmp = out_dir / f"step_{step:06d}", out_dir / f".step_{step:06d}.tmp"
    try:
        write_checkpoint(model, opt, cfg, state, tmp, final, proc)
    except BaseException as e:
        if proc.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            last = checkpoints(out_dir)
            raise write_failed(tmp, e, f"run again with --resume: it continues from "
                                       f"{last[-1] if last else 'the start'}") from None
        raise
    if proc.rank == 0:
        # prune this run's checkpoints (never another's): keep the latest few, the one the rule prefers so far, and
        # the latest whose weights a later step has shown finite (before this one): the one a run that diverges
        # next can continue from
        mine = {c: read_state(c) for c in checkpoints(out_dir)}
        mine = [c for c, st in mine.items() if (st or {}).get("run_id") == state["run_id"] and c != final]
        keep = {f"step_{chosen_step or 0:06d}", final.name, *(c.name for c in mine[-1:])}
        for old in (mine + [final])[:-cfg.keep_checkpoints]:
            if old.name not in keep:
                shutil.rmtree(old)
    barrier()
    return final


def write_checkpoint(model, opt, cfg, state: dict, tmp: Path, final: Path, proc: Processes):
    rank, world = proc.rank, proc.world
    if rank == 0:
        refuse_link(final)
        (tmp / "train_state").mkdir(parents=True)
    barrier()
    # the model, gathered one tensor at a time (collective) and written by rank 0 in the base model's dtype; whether
    # every weight is finite is recorded (a checkpoint to continue from, when the run diverges later)
    weights, dtype, finite = model.tensors(), saved_dtype(model.config.hf), []
    if rank == 0:
        write_weights(model.config, weights, lambda t: finite.append(bool(torch.isfinite(w := full(t)).all())) or w,
                      tmp, dtype)
    else:
        for t in weights.values():
            full(t)
    # exact resume needs the float32 master weights when the model directory holds a rounded copy
    from safetensors.torch import save_file
    if dtype != torch.float32:
        save_file({k: local(t).detach().cpu().contiguous() for k, t in weights.items()},
                  str(tmp / "train_state" / shard_file("master", rank, world)))
    save_optimizer(opt, tmp / "train_state" / shard_file("optimizer", rank, world))
    barrier()
    if rank == 0:
        for f in tokenizer_files(cfg.model):
            shutil.copy2(f, tmp / f.name)
        atomic_write(tmp / "train_state" / "state.json", json.dumps({**state, "world_size": world,
                                                                     "finite": all(finite)}, indent=1))
        commit_dir(tmp, final)


def save_optimizer(opt, path: Path):
    """AdamW state as safetensors (each process its own shard; no pickle anywhere)."""
    from safetensors.torch import save_file
    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for key, t in st.items():
            tensors[f"{i}.{key}"] = local(t).detach().cpu().contiguous()
    save_file(tensors, str(path))


def load_optimizer(opt, path: Path):
    from safetensors.torch import load_file
    from torch.distributed.tensor import DTensor
    try:
        saved = load_file(str(path))
    except Exception as e:  # missing, truncated, not safetensors
        raise SystemExit(f"{path}: cannot read the optimizer state ({e}); the checkpoint is damaged: move "
                         f"{path.parents[1]} away to resume from the checkpoint before it") from None
    sd = opt.state_dict()
    params = [p for g in opt.param_groups for p in g["params"]]
    state = {}
    for key, t in saved.items():
        i, name = key.split(".", 1)
        p = params[int(i)]
        if isinstance(p, DTensor) and name != "step":
            t = DTensor.from_local(t.to(p.device), p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
        state.setdefault(int(i), {})[name] = t
    sd["state"] = state
    opt.load_state_dict(sd)


def read_state(ckpt: Path) -> dict | None:
    """A checkpoint's train_state/state.json, or None if it is missing or damaged."""
    try:
        state = json.loads((ckpt / "train_state" / "state.json").read_text())
    except (OSError, ValueError):
        return None
    keys = {"step": int, "config": dict, "mixture": dict, "metrics": list, "world_size": int, "run_id": str,
            "data": dict, "finite": bool}
    return state if isinstance(state, dict) and all(isinstance(state.get(k), t) for k, t in keys.items()) else None


def good(state) -> bool:
    """A checkpoint a run can continue from: its weights are finite, no later step found them diverged (diverged)."""
    return bool(state) and state["finite"]


def diverged(what: str, out_dir: Path, bad_from: int) -> SystemExit:
    """The stop of a run whose loss, gradient or logits are no longer finite, computed from the weights of step
    `bad_from`: the checkpoints of that step and later are marked as not to continue from (their state's finite), and
    the message names the one a --resume continues from. (Pruning keeps one: save_checkpoint.)"""
    saved = [(c, read_state(c)) for c in checkpoints(out_dir)]
    for c, state in saved:
        if state and state["step"] >= bad_from and state["finite"] and rank_and_world()[0] == 0:
            atomic_write(c / "train_state" / "state.json", json.dumps({**state, "finite": False}, indent=1))
    last = next((c for c, state in reversed(saved) if good(state) and state["step"] < bad_from), None)
    return SystemExit(f"{what}: stopping before the update. " + (
        f"The last checkpoint whose weights gave a finite loss is {last}: lower lr (or check the data), then run "
        f"again with --resume, which continues from it (any later checkpoint is skipped)" if last else
        "No checkpoint before it was saved: start again with a lower lr (or check the data)"))


# the settings a resumed run may change: what comes next (its length, the lr from here on, how often it evaluates
# and saves), memory, logging, and the paths of its files (their content is compared instead). Any other (the
# mixture and its rule, the batch, the loss, which examples it skips, the dev evaluation's sampling, the seed) would
# make it another run than the one its checkpoints began.
RESUME_MAY_CHANGE = {"max_steps", "lr", "lr_schedule", "warmup_steps", "min_lr", "weight_decay", "beta1", "beta2",
                     "grad_clip", "eps", "eval_interval", "save_interval", "keep_checkpoints", "dev_batch_size",
                     "activation_checkpointing", "row_tokens", "dtype", "dist_timeout_minutes", "resume",
                     "wandb_project", "model", "system1", "system2", "dev", "bounds", "out_dir"}


def apart(out_dir: Path, files: dict):
    """A run's own files (its metrics, choice and lock, its checkpoints, which pruning deletes) are none of the files
    it reads ({name: {"path", ...}}) and no symbolic links: an output never overwrites an input."""
    for own in [Path(out_dir) / "metrics.jsonl", Path(out_dir) / "chosen.json", *Path(out_dir).glob("step_*")]:
        refuse_link(own)  # (before the run trains: not when it first writes there)
    run = Path(out_dir).resolve()
    for name, f in files.items():
        p = Path(f["path"]).resolve()
        if p.parent == run and p.name in ("metrics.jsonl", "chosen.json", ".lock") or \
                any(q.parent == run and q.name.startswith(("step_", ".step_")) for q in [p, *p.parents]):
            raise SystemExit(f"error: {name} {f['path']} is one of the files of the run in {out_dir}, which it "
                             f"rewrites or prunes: an output never overwrites what the command reads; move it out of "
                             f"{out_dir}")


def resume_point(cfg, out_dir: Path, proc: Processes, log, files: dict):
    """(checkpoint, state, master file) of the latest complete checkpoint to resume, or (None, None, None) for a
    new run. An interrupted write is a dot-directory, never taken. A new run never starts in a folder that holds
    another run: its checkpoints, metrics and choice would be mixed with (and its pruning would delete) those. A
    resumed run reads the same data as it began with: files ({name: {"path", "digest"}}) against its state's."""
    apart(out_dir, files)
    if proc.rank == 0:  # checkpoints a killed or failed write left half-written (this run holds the folder's lock)
        for tmp in out_dir.glob(".step_*.tmp"):
            refuse_link(tmp)
            shutil.rmtree(tmp)
    saved = checkpoints(out_dir)
    if not cfg.resume:
        taken = [p.name for p in saved] + [f for f in ("metrics.jsonl",) if (out_dir / f).exists()]
        if taken:
            raise SystemExit(f"{out_dir} holds a run already ({', '.join(taken[-2:])}): pass --resume to continue it "
                             f"or another out_dir; to start over, delete {out_dir} first")
        return None, None, None
    while saved:  # the latest checkpoint, but one whose weights diverged (train.py stopped after it)
        ckpt, state = saved[-1], read_state(saved[-1])
        if state is None:
            raise SystemExit(f"{ckpt / 'train_state' / 'state.json'} is missing or damaged: the checkpoint cannot be "
                             f"resumed. Move {ckpt} away to resume from the checkpoint before it.")
        if good(state):
            break
        log(f"skipping {ckpt}: its weights diverged")
        saved.pop()
    if not saved:
        return None, None, None
    if state["world_size"] != proc.world:
        raise SystemExit(f"{ckpt}: saved by {state['world_size']} processes, resumed with {proc.world}: "
                         f"the optimizer shards only fit the same number")
    master = ckpt / "train_state" / shard_file("master", proc.rank, proc.world)
    try:
        weights_dtype = saved_dtype(read_config(ckpt))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}; or move {ckpt} away to resume from the checkpoint before it") from None
    if not master.exists():
        # float32 model weights are the master weights
        if weights_dtype != torch.float32:
            raise SystemExit(f"{ckpt}: no float32 master weights ({master.name}) beside the rounded model weights; "
                             f"this checkpoint cannot be resumed exactly (start a new run from it with model={ckpt})")
        master = None
    describe = lambda f: f"{f['path']} (digest {f['digest'][:12]})" if f else "none"
    for name in sorted(set(state["data"]) | set(files)):  # by content: the same file moved elsewhere is the same
        was, now = state["data"].get(name), files.get(name)
        if (was or {}).get("digest") != (now or {}).get("digest"):
            raise SystemExit(f"{ckpt}: the run began with {name} {describe(was)}, now {describe(now)}: a resumed run "
                             f"trains on what it began with; restore that file, or start a new run (another "
                             f"out_dir) with model={ckpt}")
    changed = {k: (v, getattr(cfg, k)) for k, v in state["config"].items() if getattr(cfg, k, v) != v}
    fixed = [f"{k} {v!r} -> {now!r}" for k, (v, now) in changed.items() if k not in RESUME_MAY_CHANGE]
    if fixed:
        raise SystemExit(f"{ckpt}: resumed with settings other than its run's ({'; '.join(fixed)}): a resumed run "
                         f"continues the run it saved; pass its settings, or start a new run from its weights "
                         f"(another out_dir, model={ckpt})")
    told = {k: v for k, v in changed.items() if k not in ("resume", "model", "system1", "system2", "dev", "bounds")}
    log(f"resuming from {ckpt} (step {state['step']})" + "".join(f"; {k} {v!r} -> {now!r}"
                                                                   for k, (v, now) in told.items()))
    return ckpt, state, master


class MetricsLog:
    """metrics.jsonl (a line per step and per dev evaluation, appended as they come) and, optionally, wandb."""

    def __init__(self, cfg, out_dir: Path, rows: list, master: bool):
        self.rows, self.path, self.master, self.wandb = rows, out_dir / "metrics.jsonl", master, None
        if master:
            make_dirs(out_dir)
            atomic_write(self.path, jsonl_text(rows))  # a resumed run: what its checkpoint had seen
            if cfg.wandb_project:
                import wandb
                self.wandb = wandb
                wandb.init(project=cfg.wandb_project, name=out_dir.name, config=dataclasses.asdict(cfg))

    def record(self, row: dict):
        self.rows.append(row)
        if self.master:
            try:
                with open_append(self.path) as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:  # the checkpoint holds the metrics up to its step: a resume rewrites the file
                raise write_failed(self.path, e, "run again with --resume") from None
            if self.wandb:
                self.wandb.log(row, step=row["step"])
