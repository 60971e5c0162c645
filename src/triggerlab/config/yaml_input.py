"""YAML from users, read defensively: regular files of bounded size, UTF-8, no NUL characters,
no key given twice, no binary values or integers of absurd length, bounded nesting, and no
alias trick that expands a small file into an enormous structure."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from triggerlab.errors import ConfigError

MAX_BYTES = 1_000_000  # a config or grid spec is a few kilobytes
MAX_DEPTH = 32  # sections, lists of trigger specs and their values need a handful of levels
MAX_VALUES = 200_000  # the values a document expands to, YAML aliases followed
MAX_INT_DIGITS = 64  # far beyond any seed or count; Python refuses to parse 4,300 and more
MERGE_TAG = "tag:yaml.org,2002:merge"


class Refused(ConstructorError):
    """Valid YAML that a config may not hold."""

    def __str__(self) -> str:
        line = "" if self.problem_mark is None else f"line {self.problem_mark.line + 1}: "
        return f"{line}{self.problem}"


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses ``!!binary`` and integers of more than
    ``MAX_INT_DIGITS`` digits, each with the line it is on."""

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = len(str(node.value).replace("_", "").lstrip("+-"))
        if digits > MAX_INT_DIGITS:
            raise Refused(
                None,
                None,
                f"an integer of {digits} digits; a config's numbers have at most {MAX_INT_DIGITS}",
                node.start_mark,
            )
        return super().construct_yaml_int(node)

    def construct_yaml_binary(self, node: Node) -> bytes:
        raise Refused(
            None,
            None,
            "a !!binary value; a config holds text, numbers, lists and mappings",
            node.start_mark,
        )


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.construct_yaml_binary)


def _key_path(path: str, key: ScalarNode) -> str:
    return f"{path}.{key.value}" if path else str(key.value)


def check_duplicate_keys(root: Node, loader: _Loader, where: str) -> None:
    """Refuse a mapping that gives one key twice (YAML would keep the last silently), naming
    the key's dotted path and both lines. Each node is visited once, aliases included."""
    stack: list[tuple[Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
        if not isinstance(node, MappingNode):
            continue
        lines: dict[Any, int] = {}
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.tag != MERGE_TAG:
                constructed = loader.construct_object(key)
                line = key.start_mark.line + 1
                if constructed in lines:
                    raise ConfigError(
                        f"{where}: key {_key_path(path, key)!r} is given twice, on lines "
                        f"{lines[constructed]} and {line} (YAML would silently keep the "
                        "second); keep one"
                    )
                lines[constructed] = line
                stack.append((value, _key_path(path, key)))
            else:
                stack.append((value, path))


def _load(text: str, where: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_duplicate_keys(node, loader, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document in ``text``, with the structure checked; ``where`` names the source."""
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ConfigError(f"{where}: a NUL character on line {line}")
    try:
        value = _load(text, where)
    except Refused as exc:
        raise ConfigError(f"{where}, {exc}") from None
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


# What a path that is not a regular file is, in words.
_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_bounded(path: Path, where: str, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; ConfigError naming
    ``where`` otherwise. A pipe, a device (``/dev/zero``) or a folder is refused before
    anything is read: opening without blocking, then asking what was opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{where} not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{where} is a folder, not a file")
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
        raise ConfigError(f"{where} is {kind}; expected a regular YAML file")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)  # a file that grows while read is cut here too
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise ConfigError(f"{where} has more than {limit} bytes; a config is at most {limit}")
    return data


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (an empty file is ``{}``); ConfigError naming the file."""
    where = f"config file {path}"
    data = read_bounded(path, where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return parse_yaml(text, where) or {}
