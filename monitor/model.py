"""The few value types that flow between fetch, normalize, diff, store and notify."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ChangeKind = Literal["added", "changed", "removed"]


@dataclass(frozen=True)
class Change:
    """One line of "Recent Field Changes": a named field that appeared, changed or went away."""

    field: str
    change: ChangeKind
    old: Any = None
    new: Any = None


@dataclass
class Snapshot:
    """A record turned into named fields.

    ``fields`` maps a field name to a JSON value whose equality means "no change" (sets are
    sorted, dates are plain strings). ``items`` holds the members of lists that have an identity
    (locations, arms, outcomes, ...), keyed by ``<list field>.<identity>``; each key maps to a
    list because real records repeat identities (many "Research Site" entries in one city).
    """

    nct_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    items: dict[str, list[Any]] = field(default_factory=dict)
