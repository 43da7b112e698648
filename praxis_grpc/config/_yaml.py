"""Reading a config file: bounded in size, UTF-8, YAML with bounded nesting, no duplicate keys.

Anchors, aliases and merge keys (``<<: *base``) work, but a document may not expand
to more than :data:`MAX_NODES` nodes nor nest deeper than :data:`MAX_DEPTH`, counting
what aliases bring in, so no file can exhaust memory or the interpreter's stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from praxis_grpc.bounded_read import TooLarge, read_bounded
from praxis_grpc.config._errors import MAX_QUOTE, ConfigError, key_path, quote

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
"""Nesting levels (the deepest shipped key, ``ha.consensus.raft.peers[0]``, is at 5)."""
MAX_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_mapping(path: Path, source: str) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (``{}`` for an empty file).

    Raises:
        ConfigError: unreadable, too large, not UTF-8, invalid or too deep YAML, a
            duplicate key, or a top level that is not a mapping; the message starts
            with ``source``.
    """
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except TooLarge:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES} bytes") from None
    return parse_mapping(raw, source)


def parse_mapping(raw: bytes, source: str) -> dict[str, Any]:
    """:func:`read_mapping` for bytes already read."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text (byte {quote(raw[exc.start : exc.start + 1])} "
            f"at offset {exc.start})"
        ) from None
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, source)  # reads: refuses unprintable characters
        node = loader.get_single_node()
        document = None if node is None else loader.construct_unique(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: {_yaml_problem(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(document).__name__}")
    return document


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that bounds depth and size while composing and refuses duplicate keys."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.name = source  # marks in messages name the file
        self._source = source
        self._depth = 0
        self._nodes = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node): (nodes, height)
        self._paths: dict[int, tuple[object, ...]] = {}  # id(node): its key path

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            measured = self._measured.get(id(node))
            if measured is None:  # its anchor is still open: the node contains itself
                raise ComposerError(None, None, "found a recursive alias", mark)
            added, height = measured  # an alias brings in its whole subtree again
        else:
            if self._depth >= MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            self._depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            assert node is not None  # only get_single_node returns None (no document)
            children = [self._measured[id(child)] for child in _children(node)]
            size = 1 + sum(nodes for nodes, _ in children)
            height = 1 + max((levels for _, levels in children), default=0)
            self._measured[id(node)] = (size, height)
            added = 1  # its children were counted as they were composed
        if self._depth + height > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self._nodes += added
        if self._nodes > MAX_NODES:
            raise ComposerError(None, None, f"more than {MAX_NODES} nodes (aliases expanded)", mark)
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, ConfigError):
            raise
        except Exception as exc:  # bad timestamps, ints past str limits, bad !!tags...
            where = key_path(self._paths.get(id(node), ()))
            raise ConfigError(
                f"{self._source}: line {node.start_mark.line + 1}: {where}: "
                f"cannot read this value ({str(exc)[:MAX_QUOTE]})"
            ) from None

    def construct_unique(self, root: Node) -> Any:
        """Refuse a key that appears twice in one mapping, then construct ``root``."""
        stack: list[tuple[Node, tuple[object, ...]]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if id(node) in self._paths:
                continue
            self._paths[id(node)] = path
            if isinstance(node, SequenceNode):
                stack.extend((child, (*path, i)) for i, child in enumerate(node.value))
            elif isinstance(node, MappingNode):
                first_line: dict[object, int] = {}
                for key_node, value_node in node.value:
                    key: object = "?"  # a complex key; construct_document refuses it
                    if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                        self._paths.setdefault(id(key_node), path)
                        key = self.construct_object(key_node)
                        self._refuse_duplicate(first_line, path, key, key_node)
                    stack.append((value_node, (*path, key)))
        return self.construct_document(root)

    def _refuse_duplicate(
        self, first_line: dict[object, int], path: tuple[object, ...], key: object, node: Node
    ) -> None:
        line = node.start_mark.line + 1
        try:
            first = first_line.get(key)
        except TypeError:  # unhashable: construct_document refuses it with a message
            return
        if first is not None:
            raise ConfigError(
                f"{self._source}: line {line}: {key_path((*path, key))}: "
                f"duplicate key (first at line {first})"
            )
        first_line[key] = line


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where (line, column) and what, without the multi-line snippet."""
    where, what = "", str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
    elif isinstance(exc, yaml.reader.ReaderError):
        where = f"offset {exc.position}: "
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else quote(char)
        what = f"unacceptable character {shown}: {exc.reason}"
    return f"{where}invalid YAML: {' '.join(what.split())[:200]}"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []
