"""
Small helpers every script shares: files written atomically, and JSON Lines read with errors that name
the file and the line. Nothing here imports torch, so the grader and ratio.py stay light.
"""

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text: str):
    """Write a file so that a reader sees the old or the new content, never half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonl_text(rows, ensure_ascii=True) -> str:
    """Rows as JSON Lines text, one object per line, each line ending in a newline."""
    return "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows)


def read_jsonl(path, required=("problem",), check=None) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line or a missing field is an error naming file and line.
    `check(row)` may return a further complaint about a row (a string), reported the same way."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}; "
                                 f"each line needs {', '.join(required)}")
            complaint = check(row) if check else None
            if complaint:
                raise ValueError(f"{path}:{lineno}: {complaint}")
            rows.append(row)
    return rows
