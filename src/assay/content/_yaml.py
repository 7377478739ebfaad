"""YAML that remembers where each mapping, key and list item came from.

Content errors must name ``file:line`` (CONTRIBUTING), and PyYAML's plain loaders forget positions once a node
becomes a dict. This loader builds :class:`YMap` / :class:`YList` instead, which carry the 1-based line of the
node and of each key or item, so that a loader can point at the exact field that is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from assay.errors import ContentError, Source
from assay.yaml_limits import BoundedLoader, describe, read_yaml_text


class YMap(dict[str, Any]):
    """A mapping with the line of the mapping itself and of each of its keys."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YList(list[Any]):
    """A sequence with the line of the sequence and of each item."""

    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class _LineLoader(BoundedLoader):
    pass  # bounded depth, aliases and scalars: see assay.yaml_limits


def _construct_map(loader: _LineLoader, node: MappingNode) -> YMap:
    loader.flatten_mapping(node)  # resolves YAML merge keys (<<) the way SafeLoader does
    out = YMap()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        # Caldera keys are strings; YAML may read `1:` (legacy adversary phases) as an int.
        name = str(key)
        out[name] = loader.construct_object(value_node, deep=True)
        out.key_lines[name] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader: _LineLoader, node: SequenceNode) -> YList:
    out = YList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def load_yaml(text: str, name: str) -> Any:
    """Parse one YAML document; a syntax error becomes a :class:`ContentError` at the offending line."""
    loader: _LineLoader | None = None
    try:
        # Inside the try: the loader's reader checks the whole text for characters YAML does not allow.
        loader = _LineLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if not isinstance(node, MappingNode | SequenceNode | ScalarNode):
            raise ContentError("unsupported YAML node", Source(file=name, line=node.start_mark.line + 1))
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        message, line = describe(exc, text)
        raise ContentError(f"malformed YAML: {message}", Source(file=name, line=line)) from exc
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: Path) -> Any:
    return load_yaml(read_yaml_text(path, ContentError), str(path))
