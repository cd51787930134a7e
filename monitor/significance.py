"""How much a change matters: ``major``, ``minor`` or ``admin``.

Subscribers pick a minimum level, so one table decides what wakes a researcher up. Edit
:data:`RULES` to change a decision; the first matching row wins and anything no row matches
is :data:`DEFAULT`. Field names follow the field model (``status.overallStatus``, items as
``<list prefix>.<lower-cased key>``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Final, Literal, NamedTuple

from monitor.errors import UsageError
from monitor.model import Change, ChangeKind

Significance = Literal["major", "minor", "admin"]

#: Least to most significant; :func:`rank` and :func:`at_least` follow this order.
LEVELS: Final[tuple[Significance, ...]] = ("admin", "minor", "major")

_ANY: Final[frozenset[ChangeKind]] = frozenset({"added", "changed", "removed"})
_MEMBERSHIP: Final[frozenset[ChangeKind]] = frozenset({"added", "removed"})
_CHANGED: Final[frozenset[ChangeKind]] = frozenset({"changed"})


class Rule(NamedTuple):
    """One row: a field glob, the change kinds it covers and the level it assigns.

    ``only_keys`` narrows an item ``changed`` row to changes whose differing member keys
    all fall inside that set (geocoding touches ``geoPoint`` and nothing else).
    """

    field: str
    kinds: frozenset[ChangeKind]
    level: Significance
    only_keys: frozenset[str] | None = None


RULES: Final[tuple[Rule, ...]] = (
    # --- bookkeeping the registry touches on every edit ---------------------------------
    Rule("status.lastUpdatePostDate*", _ANY, "admin"),
    Rule("status.lastUpdateSubmitDate*", _ANY, "admin"),
    Rule("status.statusVerifiedDate*", _ANY, "admin"),
    Rule("*FirstSubmit*", _ANY, "admin"),
    Rule("*QcDate*", _ANY, "admin"),
    Rule("derived.*", _ANY, "admin"),
    Rule("annotations.*", _ANY, "admin"),
    # --- the record itself left (404) or came back to the registry -----------------------
    Rule("identification.nctId", _MEMBERSHIP, "major"),
    # --- recruitment and conduct --------------------------------------------------------
    Rule("status.overallStatus", _ANY, "major"),
    Rule("status.whyStopped", _ANY, "major"),
    Rule("status.lastKnownStatus", _ANY, "major"),
    # Dates and their Type twins (ESTIMATED -> ACTUAL) share one glob.
    Rule("status.startDate*", _ANY, "major"),
    Rule("status.primaryCompletionDate*", _ANY, "major"),
    Rule("status.completionDate*", _ANY, "major"),
    Rule("design.enrollmentCount", _ANY, "major"),
    Rule("design.enrollmentType", _ANY, "major"),
    Rule("design.phases", _ANY, "major"),
    Rule("sponsor.lead", _ANY, "major"),
    # --- results ------------------------------------------------------------------------
    Rule("results.hasResults", _ANY, "major"),
    Rule("status.resultsFirstPostDate*", _ANY, "major"),
    # --- list members -------------------------------------------------------------------
    Rule("outcomes.primary*", _ANY, "major"),
    Rule("locations*", _MEMBERSHIP, "major"),
    Rule("locations.*", _CHANGED, "admin", only_keys=frozenset({"geoPoint"})),
    Rule("armsInterventions.arms*", _MEMBERSHIP, "major"),
    Rule("armsInterventions.interventions*", _MEMBERSHIP, "major"),
)

#: What a change no row matches gets: a site's status, a secondary outcome, reworded text.
DEFAULT: Final[Significance] = "minor"


def _differing_keys(change: Change) -> frozenset[str] | None:
    """Top-level member keys an item ``changed`` touches, or None when not a dict diff."""
    if not (isinstance(change.old, dict) and isinstance(change.new, dict)):
        return None
    return frozenset(change.old) | frozenset(change.new)


def significance(change: Change) -> Significance:
    """The level of the first :data:`RULES` row that matches ``change``, else DEFAULT."""
    keys = _differing_keys(change)
    for rule in RULES:
        if change.change not in rule.kinds or not fnmatchcase(change.field, rule.field):
            continue
        if rule.only_keys is not None and (not keys or not keys <= rule.only_keys):
            continue
        return rule.level
    return DEFAULT


def rank(sig: str) -> int:
    """Position of ``sig`` in :data:`LEVELS` (higher is more significant)."""
    try:
        return LEVELS.index(sig)
    except ValueError:
        raise UsageError(
            f"unknown significance {sig!r}: expected one of {', '.join(LEVELS)}"
        ) from None


def at_least(sig: str, minimum: str) -> bool:
    """True when ``sig`` clears a subscription's ``minimum`` level."""
    return rank(sig) >= rank(minimum)


#: Within one level, these lead the list: the news a reader looks for first.
LEAD_FIELDS: Final = ("status.overallStatus", "results.hasResults", "status.whyStopped")


def news_order(field: str, level: str) -> tuple[int, int]:
    """Sort key for showing changes: most significant first, then the lead fields."""
    lead = LEAD_FIELDS.index(field) if field in LEAD_FIELDS else len(LEAD_FIELDS)
    return -rank(level), lead
