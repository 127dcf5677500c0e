"""The policy bundle from YAML files into one validated `PolicyBundle`, with file and line for
every error.

A bundle is a directory of YAML files; each holds some of the sections (`organisations`,
`consumers`, `purposes`, `price_classes`, `verification_services`, `grants`, `negative_list`)
and a name may be defined in one file only. Loading never half-succeeds: it returns a whole
bundle or every error found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.domain.policy import PolicyBundle, PolicyIssue
from gateway.errors import PolicyInvalid

SECTIONS = tuple(PolicyBundle.model_fields)
Location = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Located:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _lines(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            out[child] = key.start_mark.line + 1
            _lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


class _Sources:
    """Where each path of the merged document came from."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str | int, ...], Location] = {}

    def add(self, file: str, node: yaml.Node) -> None:
        found: dict[tuple[str | int, ...], int] = {}
        _lines(node, (), found)
        for path, line in found.items():
            self.lines.setdefault(path, (file, line))

    def locate(self, path: tuple[str | int, ...]) -> Location:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return ("(bundle)", 0)


def _describe(path: tuple[str | int, ...], message: str) -> str:
    where = ".".join(str(p) for p in path)
    return f"{where}: {message}" if where else message


def read_bundle(directory: Path) -> tuple[PolicyBundle | None, list[Located]]:
    """The bundle in `directory` and no errors, or None and every error with file and line."""
    bundle, errors, _sources = _load(directory)
    return bundle, errors


def load_bundle(directory: Path) -> PolicyBundle:
    bundle, errors = read_bundle(directory)
    if bundle is None:
        raise PolicyInvalid(errors)
    return bundle


def locate_issues(directory: Path, issues: list[PolicyIssue]) -> list[Located]:
    """File and line for issues found after loading (references, catalogue rules)."""
    _bundle, _errors, sources = _load(directory)
    return [Located(*sources.locate(i.path), _describe(i.path, i.message)) for i in issues]


def _load(directory: Path) -> tuple[PolicyBundle | None, list[Located], _Sources]:
    sources = _Sources()
    errors: list[Located] = []
    merged: dict[str, dict[str, Any] | Any] = {}
    if not directory.is_dir():
        return None, [Located(str(directory), 0, "the policy directory does not exist")], sources
    for file in sorted(directory.rglob("*.yaml")) + sorted(directory.rglob("*.yml")):
        name = str(file.relative_to(directory))
        text = file.read_text(encoding="utf-8")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            errors.append(
                Located(name, mark.line + 1 if mark else 0, f"not valid YAML: {getattr(exc, 'problem', exc)}")
            )
            continue
        if data is None or node is None:
            continue
        if not isinstance(data, dict):
            errors.append(Located(name, 1, "a policy file is a mapping of sections"))
            continue
        sources.add(name, node)
        for section, body in data.items():
            if section not in SECTIONS:
                errors.append(Located(name, sources.locate((section,))[1], f"unknown section {section!r}"))
                continue
            if section == "negative_list":
                if section in merged:
                    errors.append(Located(name, sources.locate((section,))[1], "negative_list is defined twice"))
                merged[section] = body
                continue
            if not isinstance(body, dict):
                errors.append(Located(name, sources.locate((section,))[1], f"{section} must map names to definitions"))
                continue
            target = merged.setdefault(section, {})
            for key, value in body.items():
                if key in target:
                    first = sources.locate((section, key))
                    errors.append(
                        Located(name, 0, f"{section}.{key} is defined twice (first in {first[0]}:{first[1]})")
                    )
                    continue
                target[key] = value
    if errors:
        return None, errors, sources
    try:
        bundle = PolicyBundle.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            errors.append(Located(*sources.locate(path), _describe(path, str(error["msg"]))))
        return None, errors, sources
    return bundle, [], sources


class PolicyHolder:
    """The bundle in force. A request reads `state` once and uses that object throughout, so a
    swap (one reference assignment) is atomic: no request ever sees half of two bundles.

    `unavailable` names services that the catalogue cannot serve right now (a dataset cancelled
    after the bundle was approved, say), with the reason; they are refused, the rest served.
    """

    def __init__(
        self, bundle: PolicyBundle, unavailable: Mapping[str, str] | None = None, source: object = None
    ) -> None:
        self._state = PolicyState(bundle, dict(unavailable or {}), source)

    @property
    def state(self) -> PolicyState:
        return self._state

    @property
    def current(self) -> PolicyBundle:
        return self._state.bundle

    def swap(self, bundle: PolicyBundle, unavailable: Mapping[str, str] | None = None, source: object = None) -> None:
        self._state = PolicyState(bundle, dict(unavailable or {}), source)


@dataclass(frozen=True, slots=True)
class PolicyState:
    bundle: PolicyBundle
    unavailable: dict[str, str]
    source: object = None
    """Where the bundle was read from (a stamp of the policy store), to notice a newer one."""
    version: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", self.bundle.version)
