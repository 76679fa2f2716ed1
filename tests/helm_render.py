"""A renderer for the few Go-template constructs `deploy/helm/payoutsvc/` uses, so that a test
can do what `helm template` does without helm: values, `include`, `toYaml`, `quote`,
`indent`/`nindent`, `if … end` and `define`, with `{{-`/`-}}` whitespace trimming.

Anything else is an error: a template that starts using another construct must extend this
file (and stay simple enough to be read), not be rendered wrongly.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.DOTALL)


class TemplateError(Exception):
    pass


@dataclass
class Node:
    kind: str  # "text" | "expr" | "if" | "define"
    value: str = ""
    children: list[Node] = field(default_factory=list)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for match in ACTION.finditer(text):
        chunk = text[pos : match.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if match.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        out.append(("action", match.group(2)))
        pos, trim_next = match.end(), bool(match.group(3))
    tail = text[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def parse(text: str) -> list[Node]:
    root: list[Node] = []
    stack: list[list[Node]] = [root]
    for kind, value in _tokens(text):
        if kind == "text":
            stack[-1].append(Node("text", value))
        elif value.startswith("/*"):
            continue  # a comment
        elif value == "end":
            if len(stack) == 1:
                raise TemplateError("end without if/define")
            stack.pop()
        elif value.startswith(("if ", "define ")):
            word, _, rest = value.partition(" ")
            node = Node(word, rest.strip())
            stack[-1].append(node)
            stack.append(node.children)
        else:
            stack[-1].append(Node("expr", value))
    if len(stack) != 1:
        raise TemplateError("if/define without end")
    return root


def _lookup(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.lstrip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class Chart:
    def __init__(self, directory: Path, values: dict[str, Any], release: str = "pay") -> None:
        meta = yaml.safe_load((directory / "Chart.yaml").read_text())
        self.directory = directory
        self.context = {
            "Values": values,
            "Release": {"Name": release, "Namespace": "default"},
            "Chart": {
                "Name": meta["name"],
                "Version": meta["version"],
                "AppVersion": meta["appVersion"],
            },
        }
        self.defines: dict[str, list[Node]] = {}
        for helper in sorted((directory / "templates").glob("_*.tpl")):
            for node in parse(helper.read_text()):
                if node.kind == "define":
                    self.defines[shlex.split(node.value)[0]] = node.children
                elif node.kind != "text" or node.value.strip():
                    raise TemplateError(f"{helper.name}: only define blocks belong in a helper")

    def _call(self, words: list[str], piped: Any) -> Any:
        name, args = words[0], words[1:]
        if piped is not None:
            args = [*args, piped]
        if name == "include":
            template, dot = shlex.split(args[0])[0] if args[0].startswith('"') else args[0], args[1]
            if dot != ".":
                raise TemplateError("include is rendered with . only")
            return self.render_nodes(self.defines[template.strip('"')])
        if name == "toYaml":
            value = self._value(args[0]) if isinstance(args[0], str) else args[0]
            return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")
        if name == "quote":
            return '"' + _text(args[0]).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if name in ("indent", "nindent"):
            pad = " " * int(args[0])
            text = "\n".join(pad + line if line else line for line in _text(args[1]).split("\n"))
            return "\n" + text if name == "nindent" else text
        raise TemplateError(f"unsupported function {name!r}")

    def _value(self, word: str) -> Any:
        if word.startswith("."):
            return _lookup(self.context, word)
        raise TemplateError(f"unsupported operand {word!r}")

    def evaluate(self, expression: str) -> Any:
        result: Any = None
        for i, stage in enumerate(part.strip() for part in expression.split("|")):
            words = re.findall(r'"[^"]*"|\S+', stage)
            if len(words) == 1 and i == 0 and words[0].startswith("."):
                result = self._value(words[0])
            else:
                result = self._call(words, result if i else None)
        return result

    def render_nodes(self, nodes: list[Node]) -> str:
        out = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.value)
            elif node.kind == "expr":
                out.append(_text(self.evaluate(node.value)))
            elif node.kind == "if":
                if self.evaluate(node.value):
                    out.append(self.render_nodes(node.children))
            else:
                raise TemplateError(f"define inside a template: {node.value}")
        return "".join(out)

    def render(self) -> dict[str, list[dict[str, Any]]]:
        """Every template's documents, parsed, by file name."""
        rendered = {}
        for template in sorted((self.directory / "templates").glob("*.yaml")):
            text = self.render_nodes(parse(template.read_text()))
            rendered[template.name] = [d for d in yaml.safe_load_all(text) if d is not None]
        return rendered
