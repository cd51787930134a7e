"""The significance table: each documented decision pinned to one row."""

from __future__ import annotations

import pytest

from monitor.errors import UsageError
from monitor.model import Change
from monitor.significance import at_least, rank, significance

SITE = "locations.mayo clinic|rochester|minnesota|united states"
LOCATION = {"facility": "Mayo Clinic", "city": "Rochester", "country": "United States"}


@pytest.mark.parametrize(
    "change",
    [
        Change("status.overallStatus", "changed", "RECRUITING", "SUSPENDED"),
        Change("identification.nctId", "removed", "NCT05009069", None),
        Change("status.whyStopped", "added", None, "Funding"),
        Change("status.lastKnownStatus", "changed", "RECRUITING", "ACTIVE_NOT_RECRUITING"),
        Change("outcomes.primary.adverse events", "added", None, {"measure": "AEs"}),
        Change("outcomes.primary.adverse events", "removed", {"measure": "AEs"}, None),
        Change(
            "outcomes.primary.adverse events", "changed", {"timeFrame": "1y"}, {"timeFrame": "2y"}
        ),
        Change("status.startDate", "changed", "2025-01", "2025-03"),
        Change("status.startDateType", "changed", "ESTIMATED", "ACTUAL"),
        Change("status.primaryCompletionDate", "changed", "2026-06", "2027-03"),
        Change("status.primaryCompletionDateType", "changed", "ESTIMATED", "ACTUAL"),
        Change("status.completionDate", "changed", "2027-03", "2027-06"),
        Change("status.completionDateType", "changed", "ESTIMATED", "ACTUAL"),
        Change("design.enrollmentCount", "changed", 40, 60),
        Change("design.enrollmentType", "changed", "ESTIMATED", "ACTUAL"),
        Change("design.phases", "changed", ["PHASE1"], ["PHASE1", "PHASE2"]),
        Change("results.hasResults", "changed", False, True),
        Change("status.resultsFirstPostDate", "added", None, "2026-01-10"),
        Change("sponsor.lead", "changed", "A", "B"),
        Change(SITE, "added", None, LOCATION),
        Change(SITE, "removed", LOCATION, None),
        Change("armsInterventions.arms.placebo", "added", None, {"label": "Placebo"}),
        Change("armsInterventions.arms.placebo", "removed", {"label": "Placebo"}, None),
        Change("armsInterventions.interventions.drug x", "added", None, {"name": "Drug X"}),
        Change("armsInterventions.interventions.drug x", "removed", {"name": "Drug X"}, None),
    ],
    ids=lambda c: f"{c.field}:{c.change}",
)
def test_major(change: Change) -> None:
    assert significance(change) == "major"


@pytest.mark.parametrize(
    "change",
    [
        Change("status.lastUpdatePostDate", "changed", "2025-01-01", "2025-02-01"),
        Change("status.lastUpdatePostDateType", "changed", "ESTIMATED", "ACTUAL"),
        Change("status.lastUpdateSubmitDate", "changed", "2025-01-01", "2025-02-01"),
        Change("status.statusVerifiedDate", "changed", "2025-01", "2025-02"),
        Change("status.studyFirstSubmitDate", "added", None, "2025-01-01"),
        Change("status.studyFirstSubmitQcDate", "added", None, "2025-01-01"),
        Change("status.resultsFirstSubmitDate", "added", None, "2025-01-01"),
        Change("status.lastUpdateSubmitQcDate", "changed", "2025-01-01", "2025-02-01"),
        Change("derived.conditionBrowseModule", "changed", {"a": 1}, {"a": 2}),
        Change("derived.miscInfoModule.versionHolder", "changed", "2025-01-01", "2025-02-01"),
        Change("annotations.annotationModule", "added", None, {"x": 1}),
        Change(SITE, "changed", {"geoPoint": {"lat": 1.0}}, {"geoPoint": {"lat": 1.1}}),
    ],
    ids=lambda c: f"{c.field}:{c.change}",
)
def test_admin(change: Change) -> None:
    assert significance(change) == "admin"


@pytest.mark.parametrize(
    "change",
    [
        Change(SITE, "changed", {"status": "RECRUITING"}, {"status": "COMPLETED"}),
        # Geocoding alongside a real edit is not just geocoding.
        Change(SITE, "changed", {"geoPoint": {}, "zip": "1"}, {"geoPoint": {"lat": 1}, "zip": "2"}),
        Change("outcomes.secondary.auc", "added", None, {"measure": "AUC"}),
        Change("description.briefSummary", "changed", "old words", "new words"),
        Change("eligibility.criteria", "changed", "18 years", "21 years"),
        Change(
            "armsInterventions.arms.placebo", "changed", {"description": "a"}, {"description": "b"}
        ),
        Change("status.studyFirstPostDate", "added", None, "2025-01-01"),
        Change("contacts.central.jane doe", "added", None, {"name": "Jane Doe"}),
    ],
    ids=lambda c: f"{c.field}:{c.change}",
)
def test_minor(change: Change) -> None:
    assert significance(change) == "minor"


def test_ordering() -> None:
    assert rank("major") > rank("minor") > rank("admin")
    assert at_least("major", "minor")
    assert at_least("minor", "minor")
    assert not at_least("admin", "minor")
    with pytest.raises(UsageError, match="expected one of admin, minor, major"):
        at_least("major", "urgent")
