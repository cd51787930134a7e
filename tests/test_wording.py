"""How changes read: the examples from the product brief, pinned exactly."""

from __future__ import annotations

import pytest

from monitor.model import Change
from monitor.wording import describe, format_value, headline, humanize, label, word_diff

SITE = "locations.mayo clinic|rochester|minnesota|united states"
LOCATION = {
    "facility": "Mayo Clinic",
    "city": "Rochester",
    "state": "Minnesota",
    "zip": "55905",
    "country": "United States",
    "status": "RECRUITING",
    "geoPoint": {"lat": 44.02, "lon": -92.46},
    "contacts": [{"name": "Study Desk", "phone": "555"}],
}


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (
            Change("status.overallStatus", "changed", "RECRUITING", "SUSPENDED"),
            "Overall status: RECRUITING → SUSPENDED",
        ),
        (
            Change("status.primaryCompletionDate", "changed", "2026-06", "2027-03"),
            "Primary completion date: 2026-06 → 2027-03 (9 months later)",
        ),
        (
            Change("status.primaryCompletionDate", "changed", "2026-06-15", "2026-06-01"),
            "Primary completion date: 2026-06-15 → 2026-06-01 (2 weeks earlier)",
        ),
        (
            Change("status.completionDate", "changed", "2026-06-15", "2026-06-18"),
            "Completion date: 2026-06-15 → 2026-06-18 (3 days later)",
        ),
        (
            Change("status.startDate", "changed", "2026-06", "2026-06-20"),
            "Start date: 2026-06 → 2026-06-20",
        ),
        (
            Change("status.primaryCompletionDateType", "changed", "ESTIMATED", "ACTUAL"),
            "Primary completion date type: ESTIMATED → ACTUAL",
        ),
        (
            Change("design.phases", "changed", ["PHASE1"], ["PHASE1", "PHASE2"]),
            "Phases: PHASE1 → PHASE1, PHASE2",
        ),
        (
            Change(SITE, "added", None, LOCATION),
            "Site added: Mayo Clinic, Rochester, Minnesota, United States",
        ),
        (
            Change(SITE, "removed", LOCATION, None),
            "Site removed: Mayo Clinic, Rochester, Minnesota, United States",
        ),
        (
            Change(
                "outcomes.primary.adverse events",
                "added",
                None,
                {"measure": "Adverse events", "description": "CTCAE", "timeFrame": "About 1 year"},
            ),
            "Primary outcome added: Adverse events (time frame: About 1 year)",
        ),
        (Change("results.hasResults", "changed", False, True), "Results posted"),
        (Change("results.hasResults", "added", None, True), "Results posted"),
        (
            Change("status.whyStopped", "added", None, "Sponsor decision"),
            "Why stopped: (none) → Sponsor decision",
        ),
    ],
)
def test_examples(change: Change, text: str) -> None:
    assert describe(change) == text


def test_enrollment_takes_type_from_context() -> None:
    change = Change("design.enrollmentCount", "changed", 40, 60)
    assert (
        describe(change, {"design.enrollmentType": "ESTIMATED"})
        == "Enrollment: 40 → 60 (ESTIMATED)"
    )
    assert describe(change) == "Enrollment: 40 → 60"


def test_site_change_names_the_site() -> None:
    change = Change(SITE, "changed", {"status": "RECRUITING"}, {"status": "COMPLETED"})
    expected = (
        "Site Mayo Clinic, Rochester, Minnesota, United States: status RECRUITING → COMPLETED"
    )
    assert describe(change, {SITE: [LOCATION]}) == expected
    # Without the member at hand the lower-cased key still names it.
    assert describe(change) == expected


def test_geocoding_reads_without_reprs() -> None:
    change = Change(SITE, "changed", {"geoPoint": {"lat": 1.5, "lon": 2}}, {"geoPoint": None})
    text = describe(change)
    site = "Site Mayo Clinic, Rochester, Minnesota, United States"
    assert text == f"{site}: geo point lat 1.5, lon 2 → (none)"
    assert "{" not in text
    assert "None" not in text


def test_eligibility_is_a_short_word_diff() -> None:
    filler = " ".join(f"word{i}" for i in range(400))
    old = f"Inclusion: {filler} patients at least 18 years of age. {filler} end"
    new = old.replace("18 years", "21 years")
    text = describe(Change("eligibility.criteria", "changed", old, new))
    assert text == "Eligibility criteria: …patients at least [-18-] {+21+} years of age.…"
    assert describe(Change("eligibility.criteria", "changed", old, old.replace(" ", "  "))) == (
        "Eligibility criteria: only spacing changed"
    )


def test_word_diff_is_bounded() -> None:
    words = [f"w{i}" for i in range(2000)]
    new = [w + "x" if i % 50 == 0 else w for i, w in enumerate(words)]
    text = word_diff(" ".join(words), " ".join(new))
    assert text.endswith("(+37 more edits)")
    assert len(text) < 300
    huge = word_diff("a b c " + "x " * 500, "a b c " + "y " * 500)
    assert len(huge) < 200
    assert "…" in huge


def test_values_never_print_as_reprs() -> None:
    assert format_value(None) == "(none)"
    assert format_value(True) == "yes"
    assert format_value(["A", "B"]) == "A, B"
    assert format_value({"lat": 1.5}) == "lat 1.5"
    long = format_value("x " * 200)
    assert long.endswith("…")
    assert len(long) <= 120
    assert "\n" not in describe(Change("status.whyStopped", "changed", "a\r\nBcc: x", "b"))


def test_labels() -> None:
    assert humanize("statusVerifiedDate") == "Status verified date"
    assert label("eligibility.healthyVolunteers") == "Healthy volunteers"
    assert label("design.enrollmentCount") == "Enrollment"


def test_headline_is_compact() -> None:
    change = Change("status.overallStatus", "changed", "RECRUITING", "SUSPENDED")
    assert headline(change) == "status RECRUITING → SUSPENDED"
    assert headline(Change(SITE, "added", None, LOCATION)).startswith("site added: Mayo Clinic")
