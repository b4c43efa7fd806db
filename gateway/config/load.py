"""From YAML text or a file to a checked GatewayConfig; YAML errors in plain words."""

from __future__ import annotations

import os

import yaml

from gateway.config.document import GatewayConfig, read_config
from gateway.config.reader import ConfigError, Source, join


def _record_lines(src: Source, node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            child = join(path, key)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise ConfigError(src.name, child, "key appears twice in the same mapping", line)
            seen.add(key)
            lines.setdefault(child, line)
            _record_lines(src, value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = join(path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _record_lines(src, item, child, lines)


# What a file without a single setting almost always is: a write cut short (disk full, power
# lost, an editor's half-saved buffer). Running on defaults would quietly drop passwords and
# ACLs, so it is refused; `{}` asks for every default on purpose.
EMPTY_CONFIG = (
    "no settings in the file (empty, or only comments: a truncated write?); restore it "
    "from the shipped config.yaml, or write {} to run with every default"
)

_CLOSERS = {"flow mapping": ("{", "}"), "flow sequence": ("[", "]")}


def _yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """Where a YAML error is and what it is, in words a person editing the file can act on.

    PyYAML reports where it gave up, which for an unclosed quote or bracket is often the end of
    the file; the line that needs fixing is where the quote or bracket was opened.
    """
    context, problem = exc.context or "", exc.problem or ""
    opened, mark = exc.context_mark, exc.problem_mark or exc.context_mark
    collection = _CLOSERS.get(context.removeprefix("while parsing a "))
    if "'\\t'" in problem:
        return mark, "a tab character: indent with spaces (YAML does not allow tabs)"
    if "quoted scalar" in context and "end of stream" in problem and opened is not None:
        return opened, "the quote opened here is never closed"
    if (
        collection is not None
        and opened is not None
        and mark is not None
        and mark.line > opened.line
    ):
        opener, closer = collection
        return opened, (
            f"the '{opener}' opened here is not closed "
            f"(expected '{closer}' before line {mark.line + 1})"
        )
    if "expected <block end>" in problem:
        return mark, "bad indentation: the line does not line up with the keys above it"
    if "mapping values are not allowed here" in problem:
        return mark, (
            "unexpected ':': the line is indented too far, or a value containing ': ' needs quotes"
        )
    return mark, " ".join(part for part in (context, problem) if part) or str(exc)


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Parse and validate configuration text; ``source`` names it in error messages."""
    lines: dict[str, int] = {}
    src = Source(source, lines)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(source, "", EMPTY_CONFIG)
        _record_lines(src, node, "", lines)
        data: object = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark, problem = _yaml_problem(exc)
        if mark is None:
            raise ConfigError(source, "", f"YAML syntax error: {problem}") from None
        raise ConfigError(
            source, "", f"YAML syntax error at column {mark.column + 1}: {problem}", mark.line + 1
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return read_config(src, data)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file. Raises ConfigError."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(name, "", "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read config file: {exc}") from None
    return parse_config(text, name)
