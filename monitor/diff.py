"""Compare two snapshots of one trial into the lines of "Recent Field Changes".

Plain fields compare by value. Items compare by identity key, so inserting one site into a long
list is one ``added`` line rather than a cascade of shifted positions. Keys repeat in real data
(many "Research Site" entries in one city), so the members under one key are matched as a
multiset: identical members pair first, then the rest pair up by similarity.
"""

from __future__ import annotations

from typing import Any

import orjson
from deepdiff import DeepDiff

from monitor.model import Change, Snapshot

_MISSING = object()


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _order(change: Change) -> tuple[str, str, bytes, bytes]:
    return (change.field, change.change, _dump(change.old), _dump(change.new))


def _differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Top-level keys whose values differ (a key present on one side only differs)."""
    keys = [*old, *(k for k in new if k not in old)]
    return [k for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]


def _item_change(name: str, old: dict[str, Any], new: dict[str, Any]) -> Change:
    """One ``changed`` line holding only the top-level keys that differ."""
    keys = _differing_keys(old, new)
    return Change(
        name,
        "changed",
        {k: old[k] for k in keys if k in old},
        {k: new[k] for k in keys if k in new},
    )


def _distance(old: dict[str, Any], new: dict[str, Any]) -> tuple[int, float]:
    """How unlike two members are: differing top-level keys, then deepdiff's deep distance.

    The deep distance separates candidates that differ in equally many keys (e.g. two sites
    whose contact lists both changed, one slightly and one entirely).
    """
    deep = DeepDiff(old, new, get_deep_distance=True).get("deep_distance", 0.0)
    return (len(_differing_keys(old, new)), float(deep))


def _match_members(name: str, olds: list[Any], news: list[Any]) -> list[Change]:
    """Changes among the members sharing one identity key, matched as a multiset."""
    pending: dict[bytes, list[int]] = {}
    for i, member in enumerate(olds):
        pending.setdefault(_dump(member), []).append(i)
    unmatched_new: list[int] = []
    for j, member in enumerate(news):
        same = pending.get(_dump(member))
        if same:
            same.pop(0)
        else:
            unmatched_new.append(j)
    unmatched_old = sorted(i for indexes in pending.values() for i in indexes)

    candidates = sorted(
        (_distance(olds[i], news[j]), i, j) for i in unmatched_old for j in unmatched_new
    )
    changes: list[Change] = []
    free_old, free_new = set(unmatched_old), set(unmatched_new)
    for _, i, j in candidates:
        if i in free_old and j in free_new:
            free_old.remove(i)
            free_new.remove(j)
            changes.append(_item_change(name, olds[i], news[j]))
    changes.extend(Change(name, "removed", old=olds[i]) for i in sorted(free_old))
    changes.extend(Change(name, "added", new=news[j]) for j in sorted(free_new))
    return changes


def diff(old: Snapshot, new: Snapshot) -> list[Change]:
    """Every field and item that was added, removed or changed from ``old`` to ``new``."""
    changes: list[Change] = []
    for name in old.fields.keys() | new.fields.keys():
        before = old.fields.get(name, _MISSING)
        after = new.fields.get(name, _MISSING)
        if before is _MISSING:
            changes.append(Change(name, "added", new=after))
        elif after is _MISSING:
            changes.append(Change(name, "removed", old=before))
        elif before != after:
            changes.append(Change(name, "changed", before, after))
    for name in old.items.keys() | new.items.keys():
        olds, news = old.items.get(name, []), new.items.get(name, [])
        if olds != news:
            changes.extend(_match_members(name, olds, news))
    return sorted(changes, key=_order)


def baseline(snapshot: Snapshot) -> list[Change]:
    """The "first seen" list: one ``added`` change per field and per item member."""
    changes = [Change(name, "added", new=value) for name, value in snapshot.fields.items()]
    changes.extend(
        Change(name, "added", new=member)
        for name, members in snapshot.items.items()
        for member in members
    )
    return sorted(changes, key=_order)
