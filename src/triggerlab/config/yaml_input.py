"""YAML from users, read defensively: bounded size, UTF-8, no NUL characters, bounded nesting,
and no alias trick that expands a small file into an enormous structure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from triggerlab.errors import ConfigError

MAX_BYTES = 1_000_000  # a config or grid spec is a few kilobytes
MAX_DEPTH = 32  # sections, lists of trigger specs and their values need a handful of levels
MAX_VALUES = 200_000  # the values a document expands to, YAML aliases followed


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text``, with the structure checked; ``where`` names the source."""
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ConfigError(f"{where}: a NUL character on line {line}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        message = str(exc)
        if len(message) > 500:
            message = message[:500] + " ..."
        raise ConfigError(f"{where} is not valid YAML: {message}") from None
    except RecursionError:
        raise ConfigError(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    check_structure(value, where)
    return value


def check_structure(value: Any, where: str) -> None:
    """Refuse structures nested deeper than ``MAX_DEPTH``, expanding (through shared, aliased
    parts) to more than ``MAX_VALUES`` values, containing themselves, or holding NUL."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where} nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, str):
            if "\0" in node:
                raise ConfigError(f"{where}: a string holds a NUL character")
            return 1
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in open_nodes:
            raise ConfigError(f"{where}: a value contains itself (a recursive YAML alias)")
        if key in sizes:
            return sizes[key]
        open_nodes.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1 + sum(size(child, depth + 1) for child in children)
        open_nodes.discard(key)
        if total > MAX_VALUES:
            raise ConfigError(
                f"{where} expands to more than {MAX_VALUES} values (through YAML aliases?); "
                "a config needs far fewer"
            )
        sizes[key] = total
        return total

    size(value, 0)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (an empty file is ``{}``); ConfigError naming the file."""
    where = f"config file {path}"
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(
                f"{where} has {path.stat().st_size} bytes; a config is at most {MAX_BYTES}"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a folder, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return parse_yaml(text, where) or {}
