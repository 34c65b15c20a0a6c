"""
Small helpers every script shares: the rules its settings must follow, files written atomically, and JSON
Lines read with errors that name the file, the line and the field. Nothing here imports torch.
"""

import argparse
import contextlib
import fcntl
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


def at_least(low):
    return lambda x: x >= low, f"at least {low}"


def above(low):
    return lambda x: x > low, f"more than {low}"


def between(low, high, high_open=False):
    if high_open:
        return lambda x: low <= x < high, f"at least {low} and less than {high}"
    return lambda x: low <= x <= high, f"between {low} and {high}"


FRACTION = (lambda x: 0 < x <= 1, "more than 0 and at most 1")

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
        if value is None or isinstance(value, (str, bool)):
            continue
        if not math.isfinite(value) or not ok(value):
            problems.append(f"{name}={value!r}: must be {allowed}")
    if problems:
        raise SystemExit("error: bad setting(s):\n  " + "\n  ".join(problems))


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
