"""How stored trials and changes are shown: the seed's markdown page, tables, JSON.

The page follows ``shared/seeds/000_*.txt``: YAML front matter, Key Facts, summary,
eligibility, arms, interventions, outcomes, locations, then "Recent Field Changes".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import orjson

from monitor.significance import news_order
from monitor.storage import StoredChange, Trial
from monitor.subscriptions import as_change, level_of
from monitor.wording import describe

REGISTRY = "https://clinicaltrials.gov/study/"
RECENT_DAYS = 30


def short(value: Any, limit: int = 80) -> str:
    """A value as one readable line: strings bare, lists joined, dicts as key=value."""
    if value is None:
        text = "—"
    elif isinstance(value, str):
        text = " ".join(value.split())
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = ", ".join(short(v, limit) for v in value) or "(none)"
    elif isinstance(value, dict):
        text = "; ".join(f"{k} {short(v, limit)}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def change_line(c: StoredChange) -> str:
    """``- `status.overallStatus` — changed: RECRUITING → COMPLETED _(2026-05-12)_``"""
    day = c.detected_at[:10]
    if c.baseline:
        what = "added"
    elif c.change == "changed" and isinstance(c.old, dict) and isinstance(c.new, dict):
        keys = dict.fromkeys([*c.old, *c.new])
        what = "changed: " + "; ".join(
            f"{k} {short(c.old.get(k), 40)} → {short(c.new.get(k), 40)}" for k in keys
        )
    elif c.change == "changed":
        what = f"changed: {short(c.old)} → {short(c.new)}"
    elif c.change == "added":
        what = f"added: {short(c.new)}"
    else:
        what = f"removed: {short(c.old)}"
    return f"- `{c.field}` — {what} _({day})_"


def changes_json(changes: Iterable[StoredChange]) -> str:
    return json.dumps(
        [
            {
                "id": c.id,
                "nct_id": c.nct_id,
                "field": c.field,
                "change": c.change,
                "old": c.old,
                "new": c.new,
                "detected_at": c.detected_at,
                "baseline": c.baseline,
                "significance": level_of(c),
            }
            for c in changes
        ],
        indent=2,
        ensure_ascii=False,
    )


def changes_md(
    changes: Sequence[StoredChange],
    titles: Mapping[str, str | None] | None = None,
    context: Callable[[StoredChange], Mapping[str, Any]] | None = None,
) -> str:
    """Changes as a person reads them: one section per trial and detection, news first.

    Major and minor changes are worded one per line, most significant first; bookkeeping
    (admin) changes are folded into one closing line so they never bury the news.
    """
    out: list[str] = []
    for (nct_id, detected_at), rows in groupby(changes, key=lambda c: (c.nct_id, c.detected_at)):
        group = list(rows)
        title = (titles or {}).get(nct_id)
        out.append(f"### {nct_id}{' — ' + title if title else ''} _({detected_at[:10]})_\n")
        if all(c.baseline for c in group):
            out += [f"- first seen: {len(group)} fields recorded as the baseline", ""]
            continue
        ranked = sorted(group, key=lambda c: news_order(c.field, level_of(c)))
        news = [c for c in ranked if level_of(c) != "admin"]

        def words(c: StoredChange) -> str:
            return describe(as_change(c), context(c) if context else None)

        out += [f"- **{level_of(c)}** {words(c)}" for c in news]
        admin = [short(words(c), 90) for c in ranked if level_of(c) == "admin"]
        if admin:
            out.append("- _bookkeeping:_ " + "; ".join(admin))
        out.append("")
    return "\n".join(out).rstrip()


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table (no wrapping: terminals and pipes both read it)."""
    cells = [[str(h) for h in headers], *[[str(x) for x in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def changes_table(changes: Sequence[StoredChange]) -> str:
    rows = [
        (
            c.detected_at[:16].replace("T", " "),
            c.nct_id,
            c.field if len(c.field) <= 48 else c.field[:47] + "…",
            "added (first seen)" if c.baseline else c.change,
            "" if c.baseline else short(c.old, 30),
            "" if c.baseline else short(c.new, 30),
            level_of(c),
        )
        for c in changes
    ]
    return table(rows, ["detected (UTC)", "trial", "field", "change", "old", "new", "level"])


def trials_table(trials: Sequence[Trial]) -> str:
    rows = [
        (
            t.nct_id,
            t.state,
            (t.last_checked_at or "never")[:16].replace("T", " "),
            (t.last_changed_at or "—")[:16].replace("T", " "),
            short(t.title or "", 60),
        )
        for t in trials
    ]
    return table(rows, ["trial", "state", "last checked", "last changed", "title"])


def trials_json(trials: Sequence[Trial]) -> str:
    keys = ("nct_id", "state", "title", "added_at", "last_checked_at", "last_changed_at")
    return json.dumps(
        [{k: getattr(t, k) for k in keys} | {"aliases": t.aliases} for t in trials], indent=2
    )


def trial_page(
    trial: Trial, study: dict[str, Any], changes: Sequence[StoredChange], now: datetime
) -> str:
    """The seed-style markdown page of a trial's latest stored version."""
    ps: dict[str, Any] = study.get("protocolSection", {})
    ident = ps.get("identificationModule", {})
    status = ps.get("statusModule", {})
    design = ps.get("designModule", {})
    sponsor = ps.get("sponsorCollaboratorsModule", {}).get("leadSponsor", {}).get("name", "")
    conditions = ps.get("conditionsModule", {}).get("conditions", [])
    sites = ps.get("contactsLocationsModule", {}).get("locations", [])
    countries = sorted({s.get("country", "") for s in sites if s.get("country")})
    nct = ident.get("nctId", trial.nct_id)
    title = ident.get("briefTitle", "")
    phases = ", ".join(design.get("phases", [])) or "NA"
    front = {
        "title": title,
        "nct_id": nct,
        "overall_status": status.get("overallStatus", ""),
        "phase": phases,
        "sponsor": sponsor,
        "study_type": design.get("studyType", ""),
        "primary_condition": conditions[0] if conditions else "",
        "countries": ", ".join(countries),
        "clinicaltrials_gov": REGISTRY + nct,
        "ct_last_update_post_date": status.get("lastUpdatePostDateStruct", {}).get("date", ""),
        "last_seen_at": trial.last_ok_at or "",
        "source": "ClinicalTrials.gov (via trial-monitor)",
    }
    out = ["---", *(f"{k}: {_yaml(v)}" for k, v in front.items()), "---", f"# {title}", ""]
    if ident.get("officialTitle"):
        out += [f"**Official Title:** {ident['officialTitle']}", ""]
    out += [f"**NCT ID:** [{nct}]({REGISTRY}{nct})", "", "## Key Facts", ""]
    enrollment = design.get("enrollmentInfo", {})
    facts = [
        ("Status", status.get("overallStatus")),
        ("Phase", phases),
        ("Study Type", design.get("studyType")),
        ("Target Enrollment", enrollment.get("count")),
        ("Lead Sponsor", sponsor),
        ("Conditions", ", ".join(conditions)),
        ("Start Date", status.get("startDateStruct", {}).get("date")),
        ("Primary Completion Date", status.get("primaryCompletionDateStruct", {}).get("date")),
        ("Completion Date", status.get("completionDateStruct", {}).get("date")),
        ("CT.gov Last Update", front["ct_last_update_post_date"]),
    ]
    out += [f"- **{k}:** {v}" for k, v in facts if v not in (None, "")]
    desc = ps.get("descriptionModule", {})
    for heading, key in (
        ("Brief Summary", "briefSummary"),
        ("Detailed Description", "detailedDescription"),
    ):
        if desc.get(key):
            out += ["", f"## {heading}", "", desc[key].strip()]
    elig = ps.get("eligibilityModule", {})
    if elig:
        out += ["", "## Eligibility", ""]
        for label, key in (
            ("Minimum age", "minimumAge"),
            ("Maximum age", "maximumAge"),
            ("Sex", "sex"),
        ):
            if elig.get(key):
                out.append(f"- **{label}:** {elig[key]}")
        if "healthyVolunteers" in elig:
            out.append(f"- **Healthy Volunteers:** {'Yes' if elig['healthyVolunteers'] else 'No'}")
        if elig.get("eligibilityCriteria"):
            out += ["", "```", elig["eligibilityCriteria"].strip(), "```"]
    arms = ps.get("armsInterventionsModule", {})
    out += _list_section("Arms", arms.get("armGroups", []), "label", "type", "description")
    out += _list_section(
        "Interventions", arms.get("interventions", []), "name", "type", "description"
    )
    outcomes = ps.get("outcomesModule", {})
    for heading, key in (
        ("Primary Outcomes", "primaryOutcomes"),
        ("Secondary Outcomes", "secondaryOutcomes"),
    ):
        items = outcomes.get(key, [])
        if items:
            out += ["", f"## {heading}", ""]
            for o in items:
                line = f"- **{o.get('measure', '')}**"
                if o.get("timeFrame"):
                    line += f" _(time frame: {o['timeFrame']})_"
                if o.get("description"):
                    line += f" — {short(o['description'], 300)}"
                out.append(line)
    if sites:
        out += ["", f"## Locations ({len(sites)})", ""]
        out += [
            "- " + ", ".join(s[k] for k in ("facility", "city", "state", "country") if s.get(k))
            for s in sites
        ]
    since = (now - timedelta(days=RECENT_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = [c for c in changes if c.detected_at >= since]
    # Newest news first; the first-seen baseline and bookkeeping go last, so they never bury it.
    recent.sort(key=lambda c: news_order(c.field, level_of(c)))
    recent.sort(key=lambda c: c.detected_at, reverse=True)
    recent.sort(key=lambda c: c.baseline)
    out += ["", f"## Recent Field Changes (last {RECENT_DAYS} days)", ""]
    out += [change_line(c) for c in recent] or ["_No changes recorded in this window._"]
    out += [
        "",
        "---",
        "",
        f"*Source data (authoritative): {REGISTRY}{nct}*  ",
        f"*History of versions: {REGISTRY}{nct}?tab=history*",
        "",
    ]
    return "\n".join(out)


def trial_json(trial: Trial, study: dict[str, Any], changes: Sequence[StoredChange]) -> str:
    return orjson.dumps(
        {
            "nct_id": trial.nct_id,
            "state": trial.state,
            "record": study,
            "changes": json.loads(changes_json(changes)),
        },
        option=orjson.OPT_INDENT_2,
    ).decode()


def _list_section(
    heading: str, items: list[dict[str, Any]], name: str, kind: str, text: str
) -> list[str]:
    if not items:
        return []
    lines = ["", f"## {heading}", ""]
    for item in items:
        line = f"- **{item.get(name, '')}**"
        if item.get(kind):
            line += f" ({item[kind]})"
        if item.get(text):
            line += f" — {short(item[text], 300)}"
        lines.append(line)
    return lines


def _yaml(value: Any) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ":#'\"{}[]") or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text
