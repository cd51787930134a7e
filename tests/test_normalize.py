"""The field model pinned against the recorded real records (fixtures and history versions)."""

from __future__ import annotations

import copy
import fnmatch
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.errors import FetchError
from monitor.normalize import ITEM_LISTS, catalog, content_hash, normalize

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "studies").glob("*.json"))
HISTORY = sorted((ROOT / "monitor" / "demo_data" / "history").glob("NCT*/*.json"))
GROUPS = {
    "identification",
    "status",
    "sponsor",
    "oversight",
    "description",
    "conditions",
    "design",
    "armsInterventions",
    "outcomes",
    "eligibility",
    "contacts",
    "locations",
    "references",
    "ipdSharing",
    "results",
    "documents",
    "annotations",
    "derived",
}


def load(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(path.read_bytes())
    return record


def raw(record: dict[str, Any], *path: str) -> Any:
    node: Any = record
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def leaves(value: Any) -> Iterator[tuple[str, Any]]:
    """Every scalar inside a JSON value, tagged with its type so True and 1 stay apart."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield (type(value).__name__, value)


def item_prefix(name: str) -> str:
    return next(p for p in ITEM_LISTS if name.startswith(p + "."))


P = ("protocolSection",)
#: Fixed names other modules depend on -> the raw path they come from.
FIXED: dict[str, tuple[str, ...]] = {
    "status.overallStatus": (*P, "statusModule", "overallStatus"),
    "status.whyStopped": (*P, "statusModule", "whyStopped"),
    "status.lastKnownStatus": (*P, "statusModule", "lastKnownStatus"),
    "status.statusVerifiedDate": (*P, "statusModule", "statusVerifiedDate"),
    "status.startDate": (*P, "statusModule", "startDateStruct", "date"),
    "status.startDateType": (*P, "statusModule", "startDateStruct", "type"),
    "status.primaryCompletionDate": (*P, "statusModule", "primaryCompletionDateStruct", "date"),
    "status.primaryCompletionDateType": (
        *P,
        "statusModule",
        "primaryCompletionDateStruct",
        "type",
    ),
    "status.completionDate": (*P, "statusModule", "completionDateStruct", "date"),
    "status.completionDateType": (*P, "statusModule", "completionDateStruct", "type"),
    "status.studyFirstPostDate": (*P, "statusModule", "studyFirstPostDateStruct", "date"),
    "status.resultsFirstPostDate": (*P, "statusModule", "resultsFirstPostDateStruct", "date"),
    "status.lastUpdatePostDate": (*P, "statusModule", "lastUpdatePostDateStruct", "date"),
    "status.lastUpdateSubmitDate": (*P, "statusModule", "lastUpdateSubmitDate"),
    "design.enrollmentCount": (*P, "designModule", "enrollmentInfo", "count"),
    "design.enrollmentType": (*P, "designModule", "enrollmentInfo", "type"),
    "design.studyType": (*P, "designModule", "studyType"),
    "design.allocation": (*P, "designModule", "designInfo", "allocation"),
    "design.primaryPurpose": (*P, "designModule", "designInfo", "primaryPurpose"),
    "design.masking": (*P, "designModule", "designInfo", "maskingInfo", "masking"),
    "eligibility.criteria": (*P, "eligibilityModule", "eligibilityCriteria"),
    "eligibility.minAge": (*P, "eligibilityModule", "minimumAge"),
    "eligibility.maxAge": (*P, "eligibilityModule", "maximumAge"),
    "eligibility.sex": (*P, "eligibilityModule", "sex"),
    "eligibility.healthyVolunteers": (*P, "eligibilityModule", "healthyVolunteers"),
    "sponsor.lead": (*P, "sponsorCollaboratorsModule", "leadSponsor", "name"),
    "sponsor.leadClass": (*P, "sponsorCollaboratorsModule", "leadSponsor", "class"),
    "identification.briefTitle": (*P, "identificationModule", "briefTitle"),
    "identification.officialTitle": (*P, "identificationModule", "officialTitle"),
    "identification.acronym": (*P, "identificationModule", "acronym"),
    "results.hasResults": ("hasResults",),
    "description.briefSummary": (*P, "descriptionModule", "briefSummary"),
    "description.detailedDescription": (*P, "descriptionModule", "detailedDescription"),
}
#: Fixed names whose value is an order-free list, kept sorted.
FIXED_SETS: dict[str, tuple[str, ...]] = {
    "design.phases": (*P, "designModule", "phases"),
    "identification.nctIdAliases": (*P, "identificationModule", "nctIdAliases"),
    "conditions.conditions": (*P, "conditionsModule", "conditions"),
    "conditions.keywords": (*P, "conditionsModule", "keywords"),
    "eligibility.stdAges": (*P, "eligibilityModule", "stdAges"),
    "derived.removedCountries": ("derivedSection", "miscInfoModule", "removedCountries"),
}


@pytest.mark.parametrize("path", FIXTURES + HISTORY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_record_keeps_every_value_except_version_holder(path: Path) -> None:
    record = load(path)
    snap = normalize(record)
    expected = Counter(leaves(record))
    expected[("str", record["derivedSection"]["miscInfoModule"]["versionHolder"])] -= 1
    got = Counter(leaves(list(snap.fields.values()))) + Counter(leaves(list(snap.items.values())))
    assert +expected == got
    assert snap.nct_id == record["protocolSection"]["identificationModule"]["nctId"]
    assert not any("versionHolder" in name for name in snap.fields)


@pytest.mark.parametrize("path", FIXTURES + HISTORY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_field_name_is_in_the_catalog_and_starts_with_a_group(path: Path) -> None:
    snap = normalize(load(path))
    known = set(catalog())
    for name in snap.fields:
        assert name in known, name
        assert name.split(".")[0] in GROUPS, name
    for name in snap.items:
        assert f"{item_prefix(name)}.*" in known, name


@pytest.mark.parametrize("path", FIXTURES + HISTORY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixed_names_carry_the_raw_values(path: Path) -> None:
    record = load(path)
    fields = normalize(record).fields
    for name, source in FIXED.items():
        assert fields.get(name) == raw(record, *source), name
    for name, source in FIXED_SETS.items():
        value = raw(record, *source)
        assert fields.get(name) == (None if value is None else sorted(value)), name


def test_date_structs_and_phases_read_like_the_registry() -> None:
    record = load(ROOT / "tests/fixtures/studies/NCT04431453.json")
    record["protocolSection"]["designModule"]["phases"].reverse()
    fields = normalize(record).fields
    assert fields["status.startDate"] == "2020-07-21"
    assert fields["status.startDateType"] == "ACTUAL"
    assert fields["status.lastUpdatePostDate"] == "2023-12-22"
    assert fields["design.phases"] == ["PHASE2", "PHASE3"]
    assert fields["design.enrollmentCount"] == 59
    assert fields["results.hasResults"] is True


def test_items_are_keyed_by_identity_lowercased() -> None:
    snap = normalize(load(ROOT / "tests/fixtures/studies/NCT02293265.json"))
    berlin = snap.items["locations.gsk investigational site|berlin|state of berlin|germany"]
    assert len(berlin) == 5
    assert all(site["facility"] == "GSK Investigational Site" for site in berlin)
    assert {item_prefix(name) for name in snap.items} >= {"locations", "armsInterventions.arms"}


def test_location_key_leaves_a_missing_state_empty() -> None:
    snap = normalize(load(ROOT / "monitor/demo_data/history/NCT06330064/2026-02-16_2591e4c.json"))
    [site] = snap.items["locations.spzoz szpital uniwer w krakowie|krakow||poland"]
    assert site["zip"] == "30-688"
    assert "state" not in site


def test_sub_lists_inside_items_are_sorted() -> None:
    record = load(ROOT / "monitor/demo_data/history/NCT05414032/2026-02-25_2cb20dd.json")
    for member in record["protocolSection"]["armsInterventionsModule"]["interventions"]:
        member["armGroupLabels"].reverse()
    snap = normalize(record)
    for name, members in snap.items.items():
        if name.startswith("armsInterventions.interventions."):
            for member in members:
                assert member["armGroupLabels"] == sorted(member["armGroupLabels"])


def test_reordered_lists_normalize_identically() -> None:
    record = load(ROOT / "tests/fixtures/studies/NCT04746924.json")
    shuffled = copy.deepcopy(record)
    shuffled["protocolSection"]["conditionsModule"]["conditions"].reverse()
    shuffled["protocolSection"]["contactsLocationsModule"]["locations"].reverse()
    for module in ("conditionBrowseModule", "interventionBrowseModule"):
        for members in shuffled["derivedSection"][module].values():
            members.reverse()
    assert shuffled != record
    assert normalize(shuffled) == normalize(record)


def test_version_holder_only_changes_neither_snapshot_nor_hash() -> None:
    record = load(ROOT / "tests/fixtures/studies/NCT02513394.json")
    refetched = copy.deepcopy(record)
    refetched["derivedSection"]["miscInfoModule"]["versionHolder"] = "2099-01-01"
    assert content_hash(refetched) == content_hash(record)
    assert normalize(refetched) == normalize(record)


def test_content_hash_ignores_key_order_but_not_content() -> None:
    record = load(ROOT / "tests/fixtures/studies/NCT04746924.json")
    reversed_keys = {k: record[k] for k in reversed(list(record))}
    assert content_hash(reversed_keys) == content_hash(record)
    changed = copy.deepcopy(record)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "TERMINATED"
    assert content_hash(changed) != content_hash(record)


def test_content_hash_and_normalize_leave_the_callers_dict_alone() -> None:
    record = load(ROOT / "tests/fixtures/studies/NCT04746924.json")
    before = copy.deepcopy(record)
    content_hash(record)
    normalize(record)
    assert record == before


def test_record_without_nct_id_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="nctId"):
        normalize({"protocolSection": {"statusModule": {"overallStatus": "RECRUITING"}}})


def test_catalog_names_fixed_fields_and_item_globs() -> None:
    known = catalog()
    assert known == sorted(set(known))
    assert set(FIXED) | set(FIXED_SETS) <= set(known)
    assert {f"{prefix}.*" for prefix in ITEM_LISTS} <= set(known)
    assert not any("versionHolder" in name or "DateStruct" in name for name in known)
    assert fnmatch.filter(known, "outcomes.primary*") == ["outcomes.primary.*"]
