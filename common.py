"""
Small helpers every script shares: the rules its settings must follow, files written atomically, and JSON
Lines read with errors that name the file, the line and the field. Nothing here imports torch.
"""

import argparse
import ast
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import itertools
import json
import math
import os
import signal
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
# files: every script meets the file system through these, so that each promise holds for a whole kind of input.
# Outputs are regular files and folders of their own in the folder the user named: a symbolic link planted at an
# output's path is refused, never followed or replaced; a refusal of the file system (no permission, a read-only
# or full disk, a missing folder) ends in one line with the path, the cause and the fix; an output never
# overwrites an input; a line of an input is read whole only up to MAX_LINE_BYTES.


def usual_mode(path, directory=False):
    """The permissions open() or mkdir() would have given (0644 / 0755 under the usual umask), where mkstemp and
    mkdtemp give 0600 / 0700: on a shared cluster a model or a result is meant to be readable by others."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def os_error(e: OSError) -> str:
    """An OSError as one line: the path, the cause, what to do."""
    path = e.filename if e.filename is not None else "a file"
    fix = {errno.EACCES: "fix the permissions (or use another folder)", errno.EPERM: "fix the permissions",
           errno.EROFS: "the disk is read-only: use another folder", errno.ENOSPC: "free some space",
           errno.EDQUOT: "free some space (the quota is full)", errno.ENOENT: "check the path",
           errno.ELOOP: "it is a symbolic link: outputs are files of their own, never written through a link; "
                        "remove the link or choose another path",
           errno.ENOTDIR: "a file stands where a folder should be: check the path",
           errno.EISDIR: "a folder stands where a file should be: check the path"}.get(e.errno, "check the path")
    return f"{path}: {e.strerror or e}; {fix}"


def write_failed(path, e: BaseException, then="run the same command again") -> SystemExit:
    """The one line for a write that failed (a full disk, an I/O error, no permission): what, why, what to do."""
    cause = os.strerror(e.errno) if getattr(e, "errno", None) else str(e)
    return SystemExit(f"error: cannot write {path}: {cause}. Nothing half-written was kept; free space (or fix the "
                      f"folder's permissions), then {then}")


def refuse_link(path):
    """Stop when a symbolic link stands at an output's path (it would send the write, or a removal, elsewhere)."""
    if os.path.islink(path):
        raise SystemExit(f"error: {path} is a symbolic link (to {os.readlink(path)}): outputs are files of their "
                         f"own, never written through a link; remove the link or choose another path")


def make_dirs(path):
    """A folder (and its parents) for outputs; a refusal of the file system is one line."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot make the folder {os_error(e)}") from None


def open_append(path, read=False):
    """A text file opened to append (made when missing), never through a symbolic link (O_NOFOLLOW): the part
    files, metrics and locks that runs add to. read: the lock's a+ (read its holder)."""
    flags = os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | (os.O_RDWR if read else os.O_WRONLY)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise SystemExit(f"error: cannot write {os_error(e)}") from None
    return os.fdopen(fd, "a+" if read else "a", encoding="utf-8")


def atomic_write(path, data: str | bytes):
    """Write a file (text as UTF-8) so that a reader sees the old or the new content, never half of it. A write
    that fails leaves the old content and no temporary file, and stops with write_failed's line."""
    path = Path(path)
    refuse_link(path)
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


def same_file(a, b) -> bool:
    """Are the paths one file (after resolving links; hard links too)?"""
    a, b = Path(a), Path(b)
    return os.path.samefile(a, b) if a.exists() and b.exists() else a.resolve() == b.resolve()


def check_outputs(outputs: dict, inputs: dict):
    """Before any work: no output ({what: path}) is a symbolic link, and none is a file the command reads (inputs,
    {what: path}): an output never overwrites an input."""
    for out_name, out in outputs.items():
        if not out:
            continue
        refuse_link(out)
        for in_name, source in inputs.items():
            if source and same_file(out, source):
                raise SystemExit(f"error: {out_name} {out} is the file {in_name} {source}: an output never "
                                 f"overwrites what the command reads; choose another {out_name}")


MAX_LINE_BYTES = 64 << 20  # a JSON Lines line of this project is a problem or an answer: megabytes at most


def lines(f, path, limit=None):
    """(line number, bytes) of a file opened in binary, streamed; a line longer than `limit` (MAX_LINE_BYTES) is
    refused with its number, never read whole into memory."""
    limit = limit or MAX_LINE_BYTES
    for lineno in itertools.count(1):
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            raise ValueError(f"{path}:{lineno}: a line of more than {limit >> 20} MiB, which no file of this project "
                             f"holds: is it the right file?")
        yield lineno, line


@contextlib.contextmanager
def exclusive(path, what: str):
    """Hold an exclusive lock on the file `path` while the block runs (fcntl.flock: the kernel drops it when the
    process dies, so a killed run never leaves a stale lock). Another holder is refused with its pid and host."""
    make_dirs(Path(path).parent)
    with open_append(path, read=True) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SystemExit(f"error: {what} is in use by {holder} (it holds {path}): wait for that run to end, or "
                             f"use another one") from None
        try:  # (unbuffered: a full disk fails here, not again when the file closes)
            os.truncate(f.fileno(), 0)
            os.write(f.fileno(), f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as e:
            raise write_failed(path, e) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(main, kept: str):
    """A script's entry point: main(), with what a user's interrupt or the file system can do ending in one line,
    never a traceback. Ctrl-C and SIGTERM (a scheduler's) say what the run keeps and how to continue (`kept`);
    an OSError that reached here names its path and cause."""
    def terminated(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminated)
    try:
        return main()
    except KeyboardInterrupt:
        print(f"interrupted: {kept}", file=sys.stderr)
        raise SystemExit(130) from None
    except OSError as e:
        raise SystemExit(f"error: {os_error(e)}") from None


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
    if path.stat().st_size > MAX_LINE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size >> 20} MiB, more than any JSON file of this project: is it "
                         f"the right file?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): is it the right file?") from None


def read_jsonl(path, required=("problem",), types=None, check=None, unique=None) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line, a missing field or a field of the wrong type (types: field
    -> type or tuple of types, checked where present) is an error naming file and line. `check(row)` may
    return a further complaint about a row (a string), reported the same way. `unique`: a field no two rows may
    share (as text: 7 and "7" collide), such as the id that outputs store completions under."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows, seen = [], {}
    with open(path, "rb") as f:
        for lineno, line in lines(f, path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                why = e.msg if isinstance(e, json.JSONDecodeError) else e.reason
                raise ValueError(f"{path}:{lineno}: not valid JSON ({why}); each line must be one JSON "
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
