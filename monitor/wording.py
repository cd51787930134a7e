"""How a change reads to a person; every channel and the CLI print these lines.

One line per change, never a Python repr: "Overall status: RECRUITING → SUSPENDED",
"Site added: Mayo Clinic, Rochester, Minnesota, United States", "Eligibility criteria: …at
least [-18-] {+21+} years of age…". Long values are shortened with "…" so an alert stays
readable in an SMS-sized channel.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Final

from monitor.model import Change
from monitor.normalize import ITEM_LISTS

ARROW: Final = "→"
ELLIPSIS: Final = "…"

#: Labels for the fields people see most; anything else is spelled out from its camelCase name.
LABELS: Final[Mapping[str, str]] = {
    "status.overallStatus": "Overall status",
    "status.whyStopped": "Why stopped",
    "status.lastKnownStatus": "Last known status",
    "status.statusVerifiedDate": "Status verified date",
    "status.startDate": "Start date",
    "status.startDateType": "Start date type",
    "status.primaryCompletionDate": "Primary completion date",
    "status.primaryCompletionDateType": "Primary completion date type",
    "status.completionDate": "Completion date",
    "status.completionDateType": "Completion date type",
    "status.studyFirstPostDate": "First posted",
    "status.resultsFirstPostDate": "Results first posted",
    "status.lastUpdatePostDate": "Last update posted",
    "status.lastUpdateSubmitDate": "Last update submitted",
    "design.enrollmentCount": "Enrollment",
    "design.enrollmentType": "Enrollment type",
    "design.phases": "Phases",
    "sponsor.lead": "Lead sponsor",
    "results.hasResults": "Results",
    "eligibility.criteria": "Eligibility criteria",
    "description.briefSummary": "Brief summary",
    "description.detailedDescription": "Detailed description",
    "identification.briefTitle": "Title",
    "identification.officialTitle": "Official title",
}

#: Shorter labels for subject lines ("NCT…: status RECRUITING → SUSPENDED").
SHORT_LABELS: Final[Mapping[str, str]] = {"status.overallStatus": "status"}

#: A context field whose current value qualifies a change ("Enrollment: 40 → 60 (ESTIMATED)").
QUALIFIERS: Final[Mapping[str, str]] = {"design.enrollmentCount": "design.enrollmentType"}

#: Member keys that name a list member, in order of preference, for lists without a rule below.
_NAME_KEYS: Final = ("name", "label", "measure", "title", "citation", "pmid", "url", "id")
_SITE_KEYS: Final = ("facility", "city", "state", "country")

MAX_VALUE: Final = 120  # characters of one value before it is shortened
LONG_TEXT: Final = 80  # strings at least this long are shown as a word diff
DIFF_CONTEXT: Final = 3  # words kept on each side of a changed stretch
DIFF_HUNKS: Final = 3  # changed stretches shown before "(+N more edits)"
DIFF_SIDE: Final = 60  # characters of one removed/inserted stretch


def shorten(text: str, limit: int = MAX_VALUE) -> str:
    """Collapse whitespace (no CR/LF survives) and cut at a word boundary with "…"."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + ELLIPSIS


def humanize(name: str) -> str:
    """Spell out a camelCase name: "statusVerifiedDate" -> "Status verified date"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).split()
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return text[:1].upper() + text[1:]


def label(field: str) -> str:
    """The human label of a plain field."""
    return LABELS.get(field) or humanize(field.rsplit(".", 1)[-1])


def format_value(value: Any, limit: int = MAX_VALUE) -> str:
    """A JSON value as people write it: lists joined, dicts as "key value", no reprs."""
    if value is None or value == "" or value == [] or value == {}:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        text = ", ".join(format_value(v, limit) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(
            f"{humanize(str(k)).lower()} {format_value(v, limit)}" for k, v in value.items()
        )
    else:
        text = str(value)
    return shorten(text, limit)


def _parse_date(value: Any) -> tuple[date, bool] | None:
    """A registry date and whether it carries a day (YYYY-MM-DD) or only a month (YYYY-MM)."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{4})-(\d{2})(?:-(\d{2}))?", value.strip())
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3] or 1)), m[3] is not None
    except ValueError:
        return None


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def date_shift(old: Any, new: Any) -> str | None:
    """How far a date moved: "9 months later", "2 weeks earlier", "3 days later"."""
    a, b = _parse_date(old), _parse_date(new)
    if a is None or b is None:
        return None
    (d1, full1), (d2, full2) = a, b
    if full1 and full2:
        days = (d2 - d1).days
        size = abs(days)
        if size < 61:
            amount = _plural(size // 7, "week") if size >= 14 and size % 7 == 0 else None
            amount = amount or _plural(size, "day")
        else:
            amount = _months(round(size / 30.4375))
        sign = days
    else:
        months = (d2.year - d1.year) * 12 + d2.month - d1.month
        amount, sign = _months(abs(months)), months
    if sign == 0:
        return None
    return f"{amount} {'later' if sign > 0 else 'earlier'}"


def _months(n: int) -> str:
    return _plural(n // 12, "year") if n >= 12 and n % 12 == 0 else _plural(n, "month")


def word_diff(old: str, new: str) -> str:
    """Only the changed stretches of a long text, each with a few words of context.

    Removed words read ``[-…-]`` and inserted words ``{+…+}``; after :data:`DIFF_HUNKS`
    stretches the rest is counted, so the line stays short however large the edit.
    """
    a, b = old.split(), new.split()
    groups = list(
        difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(DIFF_CONTEXT)
    )
    if not groups:
        return "only spacing changed"
    hunks = []
    for group in groups[:DIFF_HUNKS]:
        parts: list[str] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                parts.append(" ".join(a[i1:i2]))
                continue
            if i2 > i1:
                parts.append("[-" + shorten(" ".join(a[i1:i2]), DIFF_SIDE) + "-]")
            if j2 > j1:
                parts.append("{+" + shorten(" ".join(b[j1:j2]), DIFF_SIDE) + "+}")
        start, end = group[0][1], group[-1][2]
        lead = ELLIPSIS if start > 0 else ""
        tail = ELLIPSIS if end < len(a) else ""
        hunks.append(lead + " ".join(p for p in parts if p) + tail)
    text = " ".join(hunks)
    extra = len(groups) - DIFF_HUNKS
    if extra > 0:
        text += f" (+{extra} more {'edit' if extra == 1 else 'edits'})"
    return text


def _is_long_text(old: Any, new: Any) -> bool:
    return isinstance(old, str) and isinstance(new, str) and max(len(old), len(new)) >= LONG_TEXT


def _arrow(field: str, old: Any, new: Any, context: Mapping[str, Any]) -> str:
    """The value part of a plain change: "old → new" plus a shift or qualifier."""
    if _is_long_text(old, new):
        return word_diff(old, new)
    text = f"{format_value(old)} {ARROW} {format_value(new)}"
    shift = date_shift(old, new)
    qualifier_field = QUALIFIERS.get(field)
    qualifier = context.get(qualifier_field) if qualifier_field else None
    if shift:
        text += f" ({shift})"
    elif qualifier not in (None, ""):
        text += f" ({format_value(qualifier)})"
    return text


def _split_item(field: str) -> tuple[str, str] | None:
    """``(list prefix, member key)`` for an item field; the first matching prefix wins."""
    for prefix in ITEM_LISTS:
        if field.startswith(prefix + "."):
            return prefix, field[len(prefix) + 1 :]
    return None


def _noun(prefix: str) -> str:
    """ "Site", "Primary outcome", … taken from the ITEM_LISTS description."""
    noun = ITEM_LISTS[prefix].split(" (", 1)[0]
    return noun[:1].upper() + noun[1:]


def _capitalize_words(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def _name_parts(prefix: str, key: str, member: Any) -> list[str]:
    """The pieces that name a member, from the member itself, else from its lower-cased key."""
    if isinstance(member, dict):
        keys = _SITE_KEYS if prefix == "locations" else _NAME_KEYS
        found = [str(member[k]).strip() for k in keys if member.get(k) not in (None, "")]
        if prefix == "locations" and found:
            return found
        if found:
            return found[:1]
    return [_capitalize_words(p.strip()) for p in key.split("|") if p.strip()] or [key]


def _member_summary(prefix: str, key: str, member: Any) -> str:
    """How an added or removed member reads: the site address, outcome with time frame, …."""
    name = shorten(", ".join(_name_parts(prefix, key, member)))
    if not isinstance(member, dict):
        return name
    if member.get("timeFrame"):
        name += f" (time frame: {shorten(str(member['timeFrame']), 60)})"
    elif member.get("type"):
        name += f" ({format_value(member['type'])})"
    return name


def _current_member(field: str, context: Mapping[str, Any]) -> Any:
    """The member as it is now, when the caller's context holds it (a dict or a list of dicts)."""
    member = context.get(field)
    if isinstance(member, list):
        member = next((m for m in member if isinstance(m, dict)), None)
    return member


def _describe_item(change: Change, prefix: str, key: str, context: Mapping[str, Any]) -> str:
    noun = _noun(prefix)
    if change.change == "added":
        return f"{noun} added: {_member_summary(prefix, key, change.new)}"
    if change.change == "removed":
        return f"{noun} removed: {_member_summary(prefix, key, change.old)}"
    parts = _name_parts(prefix, key, _current_member(change.field, context))
    # The whole address: "Research Site, Duarte" alone names one of many "Research Site"s.
    name = shorten(", ".join(parts), 80)
    old, new = change.old, change.new
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"{noun} {name}: {format_value(old)} {ARROW} {format_value(new)}"
    diffs = [
        f"{humanize(str(k)).lower()} {_arrow('', old.get(k), new.get(k), {})}"
        for k in [*old, *(k for k in new if k not in old)]
    ]
    return f"{noun} {name}: " + "; ".join(diffs)


def _event(change: Change) -> str | None:
    """Events that read better as words than as old → new values."""
    if change.field == "results.hasResults":
        if change.new is True:
            return "Results posted"
        return "Results no longer posted" if change.old is True else None
    if change.field == "identification.nctId" and change.change != "changed":
        if change.change == "removed":
            return "Record no longer found in the registry (its last version is kept)"
        return "Record found in the registry again"
    return None


def _describe(change: Change, context: Mapping[str, Any], short: bool) -> str:
    item = _split_item(change.field)
    if item:
        text = _describe_item(change, *item, context)
        return text[:1].lower() + text[1:] if short else text
    special = _event(change)
    if special:
        return special.lower() if short else special
    body = _arrow(change.field, change.old, change.new, context)
    if short:
        name = SHORT_LABELS.get(change.field) or label(change.field).lower()
        return f"{name} {body}"
    return f"{label(change.field)}: {body}"


def describe(change: Change, context: Mapping[str, Any] | None = None) -> str:
    """One line for ``change``; ``context`` is the trial's current plain fields (and items).

    ``context`` lets a line name what the change alone does not carry: the enrollment type
    next to a new count, or the properly cased name of a site whose status changed.
    """
    return _describe(change, context or {}, short=False)


def headline(change: Change, context: Mapping[str, Any] | None = None) -> str:
    """A compact lower-case form for subject lines: "status RECRUITING → SUSPENDED"."""
    return _describe(change, context or {}, short=True)
