"""Diffs of real successive versions and of variants derived from real records."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.diff import baseline, diff
from monitor.model import Change
from monitor.normalize import normalize

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "monitor" / "demo_data"
STUDIES = ROOT / "tests" / "fixtures" / "studies"
INDEX: list[dict[str, Any]] = orjson.loads((DEMO / "history" / "INDEX.json").read_bytes())


class _Any:
    """Stands for a long value checked separately (summaries, whole member dicts)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def load(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(path.read_bytes())
    return record


def pair_changes(entry: dict[str, Any]) -> list[Change]:
    return diff(normalize(load(DEMO / entry["old"])), normalize(load(DEMO / entry["new"])))


def locations(record: dict[str, Any]) -> list[dict[str, Any]]:
    sites: list[dict[str, Any]] = record["protocolSection"]["contactsLocationsModule"]["locations"]
    return sites


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def c(field: str, change: str, old: Any = None, new: Any = None) -> Change:
    return Change(field, change, old, new)  # type: ignore[arg-type]


SEOUL = "locations.research site|seoul||south korea"
MDA = "locations.the university of texas m. d. anderson cancer center|houston|texas|united states"

#: (old file of the pair) -> exactly the changes a person would list, read off the two files.
EXPECTED: dict[str, list[Change]] = {
    "history/NCT04457778/2026-02-10_ed22b55.json": [
        c(
            "annotations.unpostedAnnotation.unpostedEvents",
            "changed",
            [{"type": "RELEASE", "date": "2025-12-11"}, {"type": "RESET", "date": "2025-12-31"}],
            [
                {"type": "RELEASE", "date": "2025-12-11"},
                {"type": "RESET", "date": "2025-12-31"},
                {"type": "RELEASE", "date": "2026-01-23"},
                {"type": "RESET", "date": "2026-02-09"},
            ],
        ),
        c(
            "derived.submissionTracking.submissionInfos",
            "changed",
            [
                {"releaseDate": "2025-12-11", "resetDate": "2025-12-31"},
                {"releaseDate": "2026-01-23"},
            ],
            [
                {"releaseDate": "2025-12-11", "resetDate": "2025-12-31"},
                {"releaseDate": "2026-01-23", "resetDate": "2026-02-09"},
            ],
        ),
    ],
    "history/NCT04457778/2026-03-03_8078b9f.json": [
        c(
            "derived.submissionTracking.submissionInfos",
            "changed",
            [
                {"releaseDate": "2025-12-11", "resetDate": "2025-12-31"},
                {"releaseDate": "2026-01-23", "resetDate": "2026-02-09"},
            ],
            [
                {"releaseDate": "2025-12-11", "resetDate": "2025-12-31"},
                {"releaseDate": "2026-01-23", "resetDate": "2026-02-09"},
                {"releaseDate": "2026-03-02"},
            ],
        ),
    ],
    "history/NCT04514484/2026-02-05_62edf6a.json": [
        c("design.enrollmentCount", "changed", 18, 8),
        c("design.enrollmentType", "changed", "ESTIMATED", "ACTUAL"),
        c("status.completionDate", "changed", "2025-11-02", "2027-02-04"),
        c("status.lastUpdatePostDate", "changed", "2025-10-28", "2026-02-09"),
        c("status.lastUpdateSubmitDate", "changed", "2025-10-25", "2026-02-06"),
        c("status.primaryCompletionDateType", "changed", "ESTIMATED", "ACTUAL"),
        c("status.statusVerifiedDate", "changed", "2025-10", "2026-02"),
    ],
    "history/NCT04514484/2026-02-10_ed22b55.json": [
        c("status.completionDate", "changed", "2027-02-04", "2027-02-06"),
        c("status.lastUpdatePostDate", "changed", "2026-02-09", "2026-02-11"),
        c("status.lastUpdateSubmitDate", "changed", "2026-02-06", "2026-02-10"),
        c("status.primaryCompletionDate", "changed", "2025-11-02", "2024-11-11"),
    ],
    "history/NCT04514484/2026-02-12_7cd4a58.json": [
        c("status.lastUpdatePostDate", "changed", "2026-02-11", "2026-02-13"),
        c("status.lastUpdateSubmitDate", "changed", "2026-02-10", "2026-02-12"),
    ],
    "history/NCT04514484/2026-02-16_2591e4c.json": [
        c("status.lastUpdatePostDate", "changed", "2026-02-13", "2026-03-09"),
        c("status.lastUpdateSubmitDate", "changed", "2026-02-12", "2026-03-06"),
    ],
    "history/NCT05009069/2026-02-26_0763c69.json": [
        c("references.41529226", "added", None, ANY),
    ],
    "history/NCT05123482/2026-02-12_7cd4a58.json": [
        c(
            "locations.research site|duarte|california|united states",
            "changed",
            {"status": "RECRUITING"},
            {"status": "COMPLETED"},
        ),
        c(
            "locations.research site|irvine|california|united states",
            "changed",
            {"status": "RECRUITING"},
            {"status": "COMPLETED"},
        ),
        c("locations.research site|sarasota|florida|united states", "removed", ANY, None),
        c("locations.research site|south brisbane||australia", "removed", ANY, None),
        c("locations.research site|taichung||taiwan", "added", None, ANY),
        c("status.lastUpdatePostDate", "changed", "2025-12-08", "2026-02-13"),
        c("status.lastUpdateSubmitDate", "changed", "2025-12-02", "2026-02-11"),
        c("status.statusVerifiedDate", "changed", "2025-11", "2026-02"),
    ],
    "history/NCT05280470/2026-02-16_2591e4c.json": [
        c("armsInterventions.arms.ifinatamab deruxtecan (12 mg/kg)", "changed", ANY, ANY),
        c("description.detailedDescription", "changed", ANY, ANY),
        c("status.dispFirstPostDate", "added", None, "2026-02-20"),
        c("status.dispFirstPostDateType", "added", None, "ACTUAL"),
        c("status.dispFirstSubmitDate", "added", None, "2026-02-19"),
        c("status.lastUpdatePostDate", "changed", "2025-10-28", "2026-02-25"),
        c("status.lastUpdateSubmitDate", "changed", "2025-10-24", "2026-02-23"),
        c("status.statusVerifiedDate", "changed", "2025-10", "2026-02"),
    ],
    "history/NCT05414032/2026-02-25_2cb20dd.json": [
        c(
            "armsInterventions.arms.mrd positive and/or radiological/clinical progression cohort",
            "added",
            None,
            ANY,
        ),
        c("armsInterventions.arms.mrd positive cohort - arm a (treatment)", "removed", ANY, None),
        c(
            "armsInterventions.arms.mrd positive cohort - arm b (observation)",
            "removed",
            {
                "label": "MRD positive Cohort - Arm B (observation)",
                "type": "NO_INTERVENTION",
                "description": "Observation",
            },
            None,
        ),
        c(
            "armsInterventions.interventions.azd2936",
            "changed",
            {"armGroupLabels": ["MRD positive Cohort - Arm A (treatment)"]},
            {"armGroupLabels": ["MRD positive and/or radiological/clinical progression Cohort"]},
        ),
        c("description.briefSummary", "changed", ANY, ANY),
        c("description.detailedDescription", "changed", ANY, ANY),
        c("design.enrollmentCount", "changed", 200, 102),
        c(
            "sponsor.collaborators.personalis inc.",
            "added",
            None,
            {"name": "Personalis Inc.", "class": "INDUSTRY"},
        ),
        c("status.completionDate", "changed", "2026-07", "2028-07"),
        c("status.lastUpdatePostDate", "changed", "2025-03-30", "2026-02-25"),
        c("status.lastUpdateSubmitDate", "changed", "2025-03-25", "2026-02-23"),
        c("status.primaryCompletionDate", "changed", "2026-07", "2027-09"),
        c("status.statusVerifiedDate", "changed", "2025-03", "2026-02"),
    ],
    "history/NCT05935098/2026-03-13_2031084.json": [
        c("design.enrollmentCount", "changed", 263, 99),
        c("design.enrollmentType", "changed", "ESTIMATED", "ACTUAL"),
        c("identification.organization", "changed", "BeiGene", "BeOne Medicines"),
        c("status.completionDate", "changed", "2027-03-31", "2026-01-27"),
        c("status.completionDateType", "changed", "ESTIMATED", "ACTUAL"),
        c("status.lastUpdatePostDate", "changed", "2025-06-25", "2026-03-13"),
        c("status.lastUpdateSubmitDate", "changed", "2025-06-23", "2026-03-11"),
        c("status.overallStatus", "changed", "ACTIVE_NOT_RECRUITING", "TERMINATED"),
        c("status.primaryCompletionDate", "changed", "2027-03-31", "2026-01-27"),
        c("status.primaryCompletionDateType", "changed", "ESTIMATED", "ACTUAL"),
        c("status.statusVerifiedDate", "changed", "2025-06", "2026-03"),
        c(
            "status.whyStopped",
            "added",
            None,
            "This decision was conducted by the sponsor and not driven by safety concerns as no"
            " new safety signals have been observed in the CCR8 program.",
        ),
    ],
    "history/NCT06330064/2026-02-12_7cd4a58.json": [
        c(
            "locations.spzoz szpital uniwer w krakowie|krakow||poland",
            "added",
            None,
            {
                "facility": "SPZOZ Szpital Uniwer w Krakowie",
                "status": "RECRUITING",
                "city": "Krakow",
                "zip": "30-688",
                "country": "Poland",
                "geoPoint": {"lat": 50.06143, "lon": 19.93658},
            },
        ),
        c("status.lastUpdatePostDate", "changed", "2026-01-16", "2026-02-12"),
        c("status.lastUpdateSubmitDate", "changed", "2026-01-14", "2026-02-10"),
        c("status.statusVerifiedDate", "changed", "2026-01", "2026-02"),
    ],
    "history/NCT06612645/2026-02-16_2591e4c.json": [
        c("status.completionDate", "changed", "2027-12-01", "2028-12-01"),
        c("status.lastUpdatePostDate", "changed", "2025-04-02", "2026-03-02"),
        c("status.lastUpdateSubmitDate", "changed", "2025-04-01", "2026-02-26"),
        c("status.primaryCompletionDate", "changed", "2026-12-01", "2027-12-01"),
        c("status.statusVerifiedDate", "changed", "2024-09", "2026-02"),
    ],
    "history/NCT06754501/2026-02-18_40019a2.json": [
        c(
            "contacts.central.ryan huey, md",
            "removed",
            {
                "name": "Ryan Huey, MD",
                "role": "CONTACT",
                "phone": "(713) 792-2828",
                "email": "rwhuey@mdanderson.org",
            },
            None,
        ),
        c("design.enrollmentCount", "changed", 35, 4),
        c("design.enrollmentType", "changed", "ESTIMATED", "ACTUAL"),
        c(
            MDA,
            "changed",
            {
                "status": "RECRUITING",
                "contacts": [
                    {
                        "name": "Ryan Huey, MD",
                        "role": "CONTACT",
                        "phone": "(713) 792-2828",
                        "email": "rwhuey@mdanderson.org",
                    },
                    {"name": "Ryan Huey, MD", "role": "PRINCIPAL_INVESTIGATOR"},
                ],
            },
            {},
        ),
        c("status.hasExpandedAccess", "removed", False, None),
        c("status.lastUpdatePostDate", "changed", "2025-10-07", "2026-02-18"),
        c("status.lastUpdateSubmitDate", "changed", "2025-10-01", "2026-02-16"),
        c("status.overallStatus", "changed", "RECRUITING", "ACTIVE_NOT_RECRUITING"),
        c("status.statusVerifiedDate", "changed", "2025-08", "2026-02"),
    ],
    "history/NCT06825494/2026-03-13_2031084.json": [
        c(
            "locations.nanyang second general hospital|nanyang|henan|china",
            "changed",
            {"geoPoint": {"lat": 32.99472, "lon": 112.53278}},
            {"geoPoint": {"lat": 33.00524, "lon": 112.54659}},
        ),
    ],
    "history/NCT07205718/2026-02-05_53e2140.json": [
        c(
            f"locations.{site}",
            "changed",
            {"status": "NOT_YET_RECRUITING"},
            {"status": "RECRUITING"},
        )
        for site in (
            "barbara ann karmanos cancer institute|detroit|michigan|united states",
            "florida cancer specialists - lake nona|orlando|florida|united states",
            "scri oncology|nashville|tennessee|united states",
        )
    ]
    + [
        c("status.lastUpdatePostDate", "changed", "2025-12-01", "2026-02-06"),
        c("status.lastUpdateSubmitDate", "changed", "2025-11-28", "2026-02-04"),
        c("status.statusVerifiedDate", "changed", "2025-11", "2026-02"),
    ],
    "history/NCT07386002/2026-02-05_62edf6a.json": [
        c(
            "identification.briefTitle",
            "changed",
            "A Phase II Study of Intracerebroventricular MT027 in Recurrent or Progressive"
            " Glioblastoma",
            "Study of Intracerebroventricular MT027 in Recurrent or Progressive Glioblastoma",
        ),
        c("status.lastUpdatePostDate", "changed", "2026-02-04", "2026-02-06"),
        c("status.lastUpdateSubmitDate", "changed", "2026-01-27", "2026-02-04"),
    ],
    "history/NCT07386002/2026-02-10_ed22b55.json": [
        c("identification.acronym", "added", None, "GLIOMAX-101"),
        c(
            "identification.briefTitle",
            "changed",
            "Study of Intracerebroventricular MT027 in Recurrent or Progressive Glioblastoma",
            "The GLIOMAX Study: MT027 Allogeneic CAR-T for Recurrent Glioma",
        ),
        c("status.lastUpdatePostDate", "changed", "2026-02-06", "2026-02-10"),
        c("status.lastUpdateSubmitDate", "changed", "2026-02-04", "2026-02-06"),
    ],
    "history/NCT05289492/2026-03-13_2031084.json": [],
}


def test_every_index_pair_has_an_expectation() -> None:
    assert {entry["old"] for entry in INDEX} == set(EXPECTED)


@pytest.mark.parametrize("entry", INDEX, ids=lambda e: f"{e['nctId']}:{e['old'][-22:-5]}")
def test_index_pair_gives_exactly_the_changes_a_person_would_list(entry: dict[str, Any]) -> None:
    changes = pair_changes(entry)
    assert changes == EXPECTED[entry["old"]]
    if entry["kind"] == "noise_versionHolder_only":
        assert changes == []


def test_reference_linked_by_pubmed_is_one_added_item() -> None:
    [entry] = [e for e in INDEX if e["nctId"] == "NCT05009069"]
    [change] = pair_changes(entry)
    assert change.new["pmid"] == "41529226"
    assert change.new["type"] == "DERIVED"
    assert change.new["citation"].startswith("Tang W, Wu A, Lan P")


def test_arm_description_edit_reports_only_the_description() -> None:
    [entry] = [e for e in INDEX if e["nctId"] == "NCT05280470"]
    arm = next(ch for ch in pair_changes(entry) if ch.field.startswith("armsInterventions."))
    assert set(arm.old) == set(arm.new) == {"description"}
    assert "In Part 2, all participants" in arm.old["description"]
    assert "from Part 1 and Part 2" in arm.new["description"]


def test_site_inserted_mid_list_of_hundreds_is_one_added_entry() -> None:
    old = load(STUDIES / "NCT02513394.json")
    new = copy.deepcopy(old)
    sites = locations(new)
    assert len(sites) > 300
    krakow = load(DEMO / "history/NCT06330064/2026-02-16_2591e4c.json")
    [extra] = [s for s in locations(krakow) if s["city"] == "Krakow"]
    sites.insert(len(sites) // 2, extra)
    sites.insert(100, copy.deepcopy(sites[250]))
    changes = diff(normalize(old), normalize(new))
    key = "|".join(sites[100].get(k, "") for k in ("facility", "city", "state", "country"))
    assert changes == sorted(
        [
            c("locations.spzoz szpital uniwer w krakowie|krakow||poland", "added", None, extra),
            c(f"locations.{key.lower()}", "added", None, sites[100]),
        ],
        key=lambda ch: ch.field,
    )


def test_removing_one_of_several_research_sites_in_a_city_is_one_removal() -> None:
    old = load(DEMO / "history/NCT05123482/2026-02-16_2591e4c.json")
    new = copy.deepcopy(old)
    [gone] = [s for s in locations(new) if s["city"] == "Seoul" and s["zip"] == "05505"]
    locations(new).remove(gone)
    assert diff(normalize(old), normalize(new)) == [c(SEOUL, "removed", gone, None)]


def test_status_change_of_one_research_site_in_a_city_is_one_change() -> None:
    old = load(DEMO / "history/NCT05123482/2026-02-16_2591e4c.json")
    new = copy.deepcopy(old)
    [site] = [s for s in locations(new) if s["city"] == "Seoul" and s["zip"] == "03722"]
    site["status"] = "COMPLETED"
    assert diff(normalize(old), normalize(new)) == [
        c(SEOUL, "changed", {"status": "RECRUITING"}, {"status": "COMPLETED"})
    ]


def with_identical_copies(record: dict[str, Any], copies: int) -> dict[str, Any]:
    """The record with extra copies of its first Seoul site right after it."""
    result = copy.deepcopy(record)
    sites = locations(result)
    first = next(i for i, s in enumerate(sites) if s["city"] == "Seoul")
    for _ in range(copies):
        sites.insert(first + 1, copy.deepcopy(sites[first]))
    return result


def test_removing_one_of_three_identical_sites_is_one_removal() -> None:
    old = with_identical_copies(load(DEMO / "history/NCT05123482/2026-02-16_2591e4c.json"), 2)
    new = copy.deepcopy(old)
    first = next(s for s in locations(new) if s["city"] == "Seoul")
    locations(new).remove(first)
    assert diff(normalize(old), normalize(new)) == [c(SEOUL, "removed", first, None)]


def test_status_change_of_one_of_three_identical_sites_is_one_change() -> None:
    old = with_identical_copies(load(DEMO / "history/NCT05123482/2026-02-16_2591e4c.json"), 2)
    new = copy.deepcopy(old)
    seoul = [s for s in locations(new) if s["city"] == "Seoul"]
    seoul[1]["status"] = "WITHDRAWN"
    assert diff(normalize(old), normalize(new)) == [
        c(SEOUL, "changed", {"status": "RECRUITING"}, {"status": "WITHDRAWN"})
    ]


def test_duplicates_pair_with_the_most_similar_member() -> None:
    old = load(DEMO / "history/NCT05123482/2026-02-16_2591e4c.json")
    new = copy.deepcopy(old)
    budapest = {s["zip"]: s for s in locations(new) if s["city"] == "Budapest"}
    assert budapest["1062"]["status"] == "WITHDRAWN"
    locations(new).remove(budapest["1062"])
    budapest["1082"]["status"] = "COMPLETED"
    budapest["1122"]["status"] = "ACTIVE_NOT_RECRUITING"
    [withdrawn] = [s for s in locations(old) if s.get("zip") == "1062"]
    field = "locations.research site|budapest||hungary"
    assert diff(normalize(old), normalize(new)) == [
        c(field, "changed", {"status": "RECRUITING"}, {"status": "ACTIVE_NOT_RECRUITING"}),
        c(field, "changed", {"status": "RECRUITING"}, {"status": "COMPLETED"}),
        c(field, "removed", withdrawn, None),
    ]


def test_equally_many_differing_keys_pair_by_deep_distance() -> None:
    """Two same-key sites whose contact lists both changed pair by how much they changed."""
    old = load(DEMO / "history/NCT06754501/2026-02-18_40019a2.json")
    [site] = locations(old)
    own_contact, own_pi = site["contacts"]
    other = locations(load(DEMO / "history/NCT06330064/2026-02-16_2591e4c.json"))
    [stranger] = next(s["contacts"] for s in other if s.get("contacts"))
    locations(old).append(dict(site, contacts=[stranger]))
    new = copy.deepcopy(old)
    locations(new).reverse()
    locations(new)[0]["contacts"] = [stranger, own_pi]  # the stranger's site gained the PI
    locations(new)[1]["contacts"] = [own_contact]  # the original site lost its PI
    changes = diff(normalize(old), normalize(new))
    assert changes == [
        c(MDA, "changed", {"contacts": [own_contact, own_pi]}, {"contacts": [own_contact]}),
        c(
            MDA,
            "changed",
            {"contacts": [stranger]},
            {"contacts": sorted([stranger, own_pi], key=canonical)},
        ),
    ]


def test_reordered_conditions_browse_lists_and_sites_give_no_change() -> None:
    old = load(STUDIES / "NCT02293265.json")
    new = copy.deepcopy(old)
    new["protocolSection"]["conditionsModule"]["conditions"].reverse()
    locations(new).reverse()
    for module in ("conditionBrowseModule", "interventionBrowseModule"):
        for members in new["derivedSection"].get(module, {}).values():
            members.reverse()
    assert new != old
    assert diff(normalize(old), normalize(new)) == []


def test_version_holder_only_gives_no_change() -> None:
    old = load(STUDIES / "NCT04746924.json")
    new = copy.deepcopy(old)
    new["derivedSection"]["miscInfoModule"]["versionHolder"] = "2099-12-31"
    assert diff(normalize(old), normalize(new)) == []


def test_diff_output_is_sorted_by_field_then_change() -> None:
    [entry] = [e for e in INDEX if e["old"].endswith("NCT05414032/2026-02-25_2cb20dd.json")]
    changes = pair_changes(entry)
    assert changes == sorted(changes, key=lambda ch: (ch.field, ch.change))
    backwards = diff(normalize(load(DEMO / entry["new"])), normalize(load(DEMO / entry["old"])))
    assert len(backwards) == len(changes)
    assert {ch.change for ch in backwards} == {"added", "removed", "changed"}


def test_baseline_lists_every_field_and_every_item_member_as_added() -> None:
    snap = normalize(load(DEMO / "history/NCT05123482/2026-02-16_2591e4c.json"))
    changes = baseline(snap)
    assert all(ch.change == "added" and ch.old is None for ch in changes)
    assert len(changes) == len(snap.fields) + sum(len(m) for m in snap.items.values())
    assert [ch.new for ch in changes if ch.field == SEOUL] == sorted(
        snap.items[SEOUL], key=canonical
    )
    assert c("status.overallStatus", "added", None, "RECRUITING") in changes
    assert changes == sorted(changes, key=lambda ch: ch.field)
