"""Reading a JSON document from a file within the caps of :mod:`optivgi.caps`.

Every problem (unreadable, too large, not UTF-8, not JSON, an integer of thousands of digits,
nesting beyond the cap) raises the caller's exception class with a one-line message that starts
with the file name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optivgi.caps import MAX_FILE_BYTES, MAX_NESTING

__all__ = ["nesting_depth", "parse_json_text", "read_json_file", "read_text_file"]


def nesting_depth(doc: Any, limit: int = MAX_NESTING) -> int:
    """Depth of nested lists and dicts in ``doc`` (a scalar is 0), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                return deepest
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth) for child in children)
    return deepest


def read_text_file(path: Path, error: type[Exception], *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped), at most ``max_bytes`` long."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: file is larger than {max_bytes // 2**20} MiB ({size} bytes)")
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read file: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_json_file(path: str | Path, error: type[Exception], *, max_bytes: int = MAX_FILE_BYTES,
                   max_nesting: int = MAX_NESTING) -> Any:
    """Decode the JSON document in ``path``; ``error`` (called with one message) on any problem."""
    path = Path(path)
    text = read_text_file(path, error, max_bytes=max_bytes)
    return parse_json_text(text, str(path), error, max_nesting=max_nesting)


def parse_json_text(text: str, where: str, error: type[Exception], *, max_nesting: int = MAX_NESTING) -> Any:
    """Decode ``text`` (named ``where`` in errors) within the nesting cap."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise error(f"{where}: arrays and objects are nested deeper than {max_nesting} levels") from None
    except ValueError as exc:  # an integer beyond Python's digit limit for int()
        raise error(f"{where}: not valid JSON: {str(exc).split(';')[0]}") from None
    if nesting_depth(doc, max_nesting) > max_nesting:
        raise error(f"{where}: arrays and objects are nested deeper than {max_nesting} levels")
    return doc
