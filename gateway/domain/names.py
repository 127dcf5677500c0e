"""The names that become paths, URLs or SQL identifiers, and the one check each passes.

A name reaches a file path (the catalogue keeps one file per dataset), a quoted SQL identifier
(datasets and columns) or a URL (services, templates, models). Each is checked against one
pattern at the edge, by pydantic, and again where it is used, so that a name from anywhere else
(a policy file, the CLI) passes the same rule. No pattern admits `/`, `.`, NUL or upper case.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

IDENTIFIER_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
"""Datasets and columns: safe to quote into SQL and to use as a file name."""

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""Services, templates, models, grants, purposes, organisations: an identifier, or with `-`."""

RECORD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Ids the gateway hands out (jobs, objections, proposals): letters, digits, `_` and `-`."""

CLIENT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,63}$"
"""Client ids: chosen by administrators; never a path (accounts live in one store)."""

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
RecordId = Annotated[str, Field(pattern=RECORD_ID_PATTERN)]
ClientId = Annotated[str, Field(pattern=CLIENT_ID_PATTERN)]

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_NAME = re.compile(NAME_PATTERN)

MAX_POSITION = 2**53 - 1
"""Largest count or position taken from a request: exact in JSON numbers and in SQL integers."""


def is_identifier(value: object) -> bool:
    """A dataset or column name (fullmatch: `re.match` with `$` would admit a trailing newline)."""
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None
