"""
Small helpers every script shares: the rules its settings must follow, files written atomically, and JSON
Lines read with errors that name the file, the line and the field. Nothing here imports torch.
"""

import argparse
import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
from pathlib import Path

# -----------------------------------------------------------------------------
# settings: one spelling per flag, and every script checks all of its settings before any work, by these rules


class ArgumentParser(argparse.ArgumentParser):
    """Every script's flags: one spelling, with underscores (--max_new_tokens, as torchrun's --nproc_per_node and
    nanoGPT's --batch_size are written, and as train.py's settings are named); a flag spelled with dashes is an
    error that names the right one, and no flag is taken for a prefix of another."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args = [str(a) for a in (sys.argv[1:] if args is None else args)]
        known = {o for action in self._actions for o in action.option_strings}
        for arg in args:
            flag = arg.split("=", 1)[0]
            right = "--" + flag[2:].replace("-", "_")
            if flag.startswith("--") and flag not in known and right in known:
                self.error(f"{flag}: flags are spelled with underscores: {right}")
        return super().parse_args(args, namespace)


# a rule: (test, what it says when a value fails it)
def at_least(low):
    return lambda x: x >= low, f"must be at least {low}"


def above(low):
    return lambda x: x > low, f"must be more than {low}"


def between(low, high, high_open=False):
    if high_open:
        return lambda x: low <= x < high, f"must be at least {low} and less than {high}"
    return lambda x: low <= x <= high, f"must be between {low} and {high}"


def one_of(*choices):
    return lambda x: x in choices, f"use {', '.join(choices[:-1])} or {choices[-1]}"


FRACTION = (lambda x: 0 < x <= 1, "must be more than 0 and at most 1")

# the settings several scripts share (sample.py, data/build.py, evaluate.py, grade.py, train.py's dev_*)
RULES = {
    "temperature": at_least(0), "top_p": FRACTION, "top_k": at_least(0), "max_new_tokens": at_least(1),
    "samples": at_least(1), "batch_size": at_least(1), "seed": at_least(0), "workers": at_least(1),
    "limit": at_least(0), "size": at_least(1),
}


def check_settings(values: dict, rules: dict = RULES):
    """Stop, naming every setting whose value breaks its rule (numbers must also be finite), before any work."""
    problems = []
    for name, (ok, allowed) in rules.items():
        value = values.get(name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            problems.append(f"{name}={value!r}: {allowed}")
    if problems:
        raise SystemExit("error: bad setting(s):\n  " + "\n  ".join(problems))


# config files: Python assignments of literals, read without running them (nothing is exec'd)

def config_lines(path: Path, seen: tuple = ()) -> list[tuple[str, object, str]]:
    """(setting, value, file:line) of a config file of `name = literal` lines, in order. A line `base = "FILE"`
    (a file beside this one) stands for that file's lines: a recipe that differs from another in a few settings
    holds only those."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such config file")
    if path.resolve() in seen:
        raise SystemExit(f"{path}: read again through its own base (a loop of base = lines)")
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError as e:
        raise SystemExit(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None
    lines = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        single_name = isinstance(node, ast.Assign) and len(node.targets) == 1
        if not (single_name and isinstance(node.targets[0], ast.Name)):
            raise SystemExit(f"{path}:{node.lineno}: a config file holds only `name = value` lines")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise SystemExit(f"{path}:{node.lineno}: the value must be a literal (number, string, "
                             f"bool)") from None
        if node.targets[0].id == "base":
            if not isinstance(value, str):
                raise SystemExit(f"{path}:{node.lineno}: base names a config file beside this one, as a string")
            lines += config_lines(path.parent / value, seen + (path.resolve(),))
        else:
            lines.append((node.targets[0].id, value, f"{path}:{node.lineno}"))
    return lines



def read_settings(cls, argv):
    """A `cls` dataclass of settings: its defaults, then config files of `key = literal` lines in order, then
    --key=value flags; every value checked against its field's type and rule (setting()) before any work."""
    cfg, fields = cls(), {f.name: f for f in dataclasses.fields(cls)}

    def set_value(key, value, where):
        if key not in fields:
            right = key.replace("-", "_")
            hint = f"settings are spelled with underscores: {right}" if right in fields else \
                f"the settings are the {cls.__name__} fields"
            raise SystemExit(f"{where}: unknown setting {key!r}; {hint}")
        want = type(getattr(cfg, key))
        if want is bool and isinstance(value, str):
            value = {"true": True, "false": False, "1": True, "0": False}.get(value.lower(), value)
        elif isinstance(value, str) and want is not str:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise SystemExit(f"{where}: {key}={value!r} is not a {want.__name__}") from None
        if want is float and type(value) is int:
            value = float(value)
        if type(value) is not want:
            raise SystemExit(f"{where}: {key}={value!r} is not a {want.__name__}")
        setattr(cfg, key, value)

    for arg in argv:
        if arg.startswith("--"):
            key, has_value, value = arg[2:].partition("=")
            set_value(key, value if has_value else "true", f"flag {arg}")  # a bare --resume means --resume=true
        else:
            for key, value, where in config_lines(Path(arg)):
                set_value(key, value, where)
    check_settings(dataclasses.asdict(cfg), {f.name: f.metadata["rule"] for f in fields.values()
                                             if "rule" in f.metadata})
    return cfg


def setting(default, rule=None):
    """A settings dataclass field with the rule its value must follow (at_least(1), between(0, 1), ...)."""
    return dataclasses.field(default=default, metadata={"rule": rule} if rule else {})


# -----------------------------------------------------------------------------
# files


def usual_mode(path, directory=False):
    """The permissions open() or mkdir() would have given (0644 / 0755 under the usual umask), where mkstemp and
    mkdtemp give 0600 / 0700: on a shared cluster a model or a result is meant to be readable by others."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def write_failed(path, e: BaseException, then="run the same command again") -> SystemExit:
    """The one line for a write that failed (a full disk, an I/O error, no permission): what, why, what to do."""
    cause = os.strerror(e.errno) if getattr(e, "errno", None) else str(e)
    return SystemExit(f"error: cannot write {path}: {cause}. Nothing half-written was kept; free space (or fix the "
                      f"folder's permissions), then {then}")


def atomic_write(path, data: str | bytes):
    """Write a file (text as UTF-8) so that a reader sees the old or the new content, never half of it. A write
    that fails leaves the old content and no temporary file, and stops with write_failed's line."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        usual_mode(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e) from None
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()


@contextlib.contextmanager
def exclusive(path, what: str):
    """Hold an exclusive lock on the file `path` while the block runs (fcntl.flock: the kernel drops it when the
    process dies, so a killed run never leaves a stale lock). Another holder is refused with its pid and host."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SystemExit(f"error: {what} is in use by {holder} (it holds {path}): wait for that run to end, or "
                             f"use another one") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def example_error(row: dict) -> str | None:
    """What is wrong with a line of a training set ({"problem", "response"} or chat {"messages"}), or None."""
    if "messages" in row:
        turns = row["messages"] if isinstance(row["messages"], list) else []
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in turns) or not {"user", "assistant"} <= {m["role"] for m in turns}:
            return "'messages' must be a list of {'role', 'content'} strings with a user and an assistant turn"
    elif not ("problem" in row and "response" in row):
        return "missing field(s): each line needs problem and response (or messages)"
    return None


def jsonl_text(rows, ensure_ascii=True) -> str:
    """Rows as JSON Lines text, one object per line, each line ending in a newline."""
    return "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows)


TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
              dict: "an object"}
ID, TEXT, NUMBER, ANSWER = (str, int), (str,), (int, float), (str, int, float)
PROBLEM_TYPES = {"id": ID, "problem": TEXT, "answer": ANSWER}  # a problem file's fields: benchmarks, stages


def type_error(field, value, types) -> str | None:
    """A complaint when value is not of one of types (a bool is no number here, as JSON sees it)."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return None
    allowed = " or ".join(dict.fromkeys(TYPE_NAMES[t] for t in types if not (t is int and float in types)))
    return f"'{field}' must be {allowed}, got {json.dumps(value)[:40]}"


def row_type_error(row: dict, types: dict) -> str | None:
    """The first complaint about a row's fields (types: field -> type or tuple of types, checked where present)."""
    return next((c for k, t in types.items() if k in row for c in [type_error(k, row[k], t)] if c), None)


def file_digest(path) -> str:
    """The SHA-256 of a file's content, read in blocks: what a resumed run or output compares, not sizes or times."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path):
    """A JSON file; a damaged one is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_jsonl(path, required=("problem",), types=None, check=None, unique=None) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line, a missing field or a field of the wrong type (types: field
    -> type or tuple of types, checked where present) is an error naming file and line. `check(row)` may
    return a further complaint about a row (a string), reported the same way. `unique`: a field no two rows may
    share (as text: 7 and "7" collide), such as the id that outputs store completions under."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON "
                                 f"object") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}; "
                                 f"each line needs {', '.join(required)}")
            complaint = row_type_error(row, types or {}) or (check(row) if check else None)
            if complaint:
                raise ValueError(f"{path}:{lineno}: {complaint}")
            if unique and unique in row:
                key = str(row[unique])
                if key in seen:
                    raise ValueError(f"{path}:{lineno}: {unique} {row[unique]!r} again (line {seen[key]} has it): "
                                     f"every line needs its own {unique}, under which its results are stored")
                seen[key] = lineno
            rows.append(row)
    return rows
