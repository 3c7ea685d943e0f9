"""The one YAML loader for files an operator or attacker writes (team files, settings).

PyYAML's ``safe_load`` still expands aliases: nine lines of ``&a``/``*a`` make a document of
10**9 nodes that everything downstream walks (90 s and 2.9 GB in ``apply --dry-run``). Real
team files and settings have no use for aliases, so any alias is refused while composing,
before anything is built. The text is size-capped first, nesting depth is capped while
composing, and duplicate mapping keys are refused (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_BYTES = 64 * 1024 * 1024  # like the collector's apply_max_body
MAX_DEPTH = 32  # PyYAML composes recursively: [[[[... 100,000 deep is a RecursionError


class YamlRefused(yaml.YAMLError):
    """A document refused before parsing (too big)."""


class DuplicateKey(ConstructorError):
    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(None, None, f"duplicate key {key!r}", mark)
        self.key = key


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, deep nesting or duplicate mapping keys."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; let PyYAML report it
                break
            if duplicate:
                raise DuplicateKey(key, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str, *, max_bytes: int = MAX_BYTES) -> Any:
    """``text`` parsed as YAML by ``StrictLoader``; ``yaml.YAMLError`` if refused."""
    if len(text) > max_bytes:  # characters >= bytes/4; cheap before encoding anything
        raise YamlRefused(f"document over {max_bytes} bytes")
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise YamlRefused(f"document over {max_bytes} bytes")
    return yaml.load(text, Loader=StrictLoader)
