"""Turn one API v2 study record into named fields (the field model).

Every value of the record except ``derivedSection.miscInfoModule.versionHolder`` (the daily
data-release date, which changes on every refetch) ends up in the snapshot, so no change is lost.

Naming rules, applied to each raw JSON path:

* The group is the API module: ``protocolSection.<x>Module`` maps to ``identification``,
  ``status``, ``sponsor``, ``oversight``, ``description``, ``conditions``, ``design``,
  ``armsInterventions``, ``outcomes``, ``eligibility``, ``contacts``, ``references``,
  ``ipdSharing``; ``resultsSection`` and the top-level ``hasResults`` map to ``results`` (one
  sub-group per results module, e.g. ``results.adverseEvents.*``, except the outcome measures
  which are items); ``documentSection`` to ``documents``, ``annotationSection`` to
  ``annotations``, ``derivedSection`` to ``derived`` (browse modules keep a sub-group:
  ``derived.conditionBrowse.*``). An unknown module becomes its name without ``Module``.
* Inside a group the name is the path of dict keys joined with ``.`` (the generic rule), with
  two refinements. ``<x>DateStruct`` {date, type} becomes ``<x>Date`` and ``<x>DateType``.
  Wrappers that only group fields are flattened (``_RENAMES``): ``design.allocation``,
  ``design.masking``, ``design.enrollmentCount``, ``sponsor.lead``, ``sponsor.leadClass``,
  ``identification.orgStudyId``, ``eligibility.criteria``, ``eligibility.minAge`` ...
* Descent stops at a scalar or a list: a list is one field. No list in a study record carries
  meaning in its order, so every list is sorted (strings by text, anything else by its canonical
  JSON) and a reordering is never a change. Values stay readable: dates are the API's strings,
  numbers stay numbers, long text stays text.
* Lists whose members have an identity become items (``ITEM_LISTS``): each member is stored under
  ``<prefix>.<key>`` (key lower-cased) as the member dict with the API's keys, its sub-lists sorted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from typing import Any

import orjson

from monitor.errors import FetchError
from monitor.model import Snapshot

#: Lists whose members have an identity. Each member becomes the item ``<prefix>.<key>``;
#: the key is lower-cased. Order matters: the first matching prefix wins when parsing a name.
ITEM_LISTS: dict[str, str] = {
    "locations": "site (facility|city|state|country)",
    "contacts.central": "central contact (name)",
    "contacts.officials": "overall official (name)",
    "armsInterventions.arms": "arm (label)",
    "armsInterventions.interventions": "intervention (name)",
    "outcomes.primary": "primary outcome (measure)",
    "outcomes.secondary": "secondary outcome (measure)",
    "outcomes.other": "other outcome (measure)",
    "sponsor.collaborators": "collaborator (name)",
    "references.links": "see-also link (url)",
    "references.ipds": "available IPD document (id or url)",
    "references": "reference (PMID, else citation)",
    "results.outcomeMeasures": "posted outcome measure (title)",
}

_PROTOCOL_GROUPS: dict[str, str] = {
    "identificationModule": "identification",
    "statusModule": "status",
    "sponsorCollaboratorsModule": "sponsor",
    "oversightModule": "oversight",
    "descriptionModule": "description",
    "conditionsModule": "conditions",
    "designModule": "design",
    "armsInterventionsModule": "armsInterventions",
    "outcomesModule": "outcomes",
    "eligibilityModule": "eligibility",
    "contactsLocationsModule": "contacts",
    "referencesModule": "references",
    "ipdSharingStatementModule": "ipdSharing",
}

#: Section -> (group, modules whose fields sit directly in the group rather than a sub-group).
_SECTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "resultsSection": ("results", frozenset({"outcomeMeasuresModule"})),
    "documentSection": ("documents", frozenset({"largeDocumentModule"})),
    "annotationSection": ("annotations", frozenset({"annotationModule"})),
    "derivedSection": ("derived", frozenset({"miscInfoModule"})),
}

#: (group, dotted path inside the module) -> name inside the group, for pure wrappers.
_RENAMES: dict[tuple[str, str], str] = {
    ("identification", "orgStudyIdInfo.id"): "orgStudyId",
    ("identification", "orgStudyIdInfo.type"): "orgStudyIdType",
    ("identification", "orgStudyIdInfo.link"): "orgStudyIdLink",
    ("identification", "organization.fullName"): "organization",
    ("identification", "organization.class"): "organizationClass",
    ("identification", "secondaryIdInfos"): "secondaryIds",
    ("status", "expandedAccessInfo.hasExpandedAccess"): "hasExpandedAccess",
    ("status", "expandedAccessInfo.nctId"): "expandedAccessNctId",
    ("status", "expandedAccessInfo.statusForNctId"): "expandedAccessStatus",
    ("sponsor", "leadSponsor.name"): "lead",
    ("sponsor", "leadSponsor.class"): "leadClass",
    ("design", "designInfo.allocation"): "allocation",
    ("design", "designInfo.interventionModel"): "interventionModel",
    ("design", "designInfo.interventionModelDescription"): "interventionModelDescription",
    ("design", "designInfo.primaryPurpose"): "primaryPurpose",
    ("design", "designInfo.observationalModel"): "observationalModel",
    ("design", "designInfo.timePerspective"): "timePerspective",
    ("design", "designInfo.maskingInfo.masking"): "masking",
    ("design", "designInfo.maskingInfo.maskingDescription"): "maskingDescription",
    ("design", "designInfo.maskingInfo.whoMasked"): "whoMasked",
    ("design", "enrollmentInfo.count"): "enrollmentCount",
    ("design", "enrollmentInfo.type"): "enrollmentType",
    ("design", "bioSpec.retention"): "bioSpecRetention",
    ("design", "bioSpec.description"): "bioSpecDescription",
    ("eligibility", "eligibilityCriteria"): "criteria",
    ("eligibility", "minimumAge"): "minAge",
    ("eligibility", "maximumAge"): "maxAge",
}

_Member = dict[str, Any]


def _text(member: _Member, key: str) -> str:
    value = member.get(key)
    return "" if value is None else str(value).strip()


def _location_key(member: _Member) -> str:
    return "|".join(_text(member, k) for k in ("facility", "city", "state", "country"))


def _reference_key(member: _Member) -> str:
    return _text(member, "pmid") or _text(member, "citation")


def _ipd_key(member: _Member) -> str:
    return _text(member, "id") or _text(member, "url")


def _by(key: str) -> Callable[[_Member], str]:
    return lambda member: _text(member, key)


#: (group, key inside the module) -> (item prefix, identity of a member).
_ITEM_SOURCES: dict[tuple[str, str], tuple[str, Callable[[_Member], str]]] = {
    ("contacts", "locations"): ("locations", _location_key),
    ("contacts", "centralContacts"): ("contacts.central", _by("name")),
    ("contacts", "overallOfficials"): ("contacts.officials", _by("name")),
    ("armsInterventions", "armGroups"): ("armsInterventions.arms", _by("label")),
    ("armsInterventions", "interventions"): ("armsInterventions.interventions", _by("name")),
    ("outcomes", "primaryOutcomes"): ("outcomes.primary", _by("measure")),
    ("outcomes", "secondaryOutcomes"): ("outcomes.secondary", _by("measure")),
    ("outcomes", "otherOutcomes"): ("outcomes.other", _by("measure")),
    ("sponsor", "collaborators"): ("sponsor.collaborators", _by("name")),
    ("references", "references"): ("references", _reference_key),
    ("references", "seeAlsoLinks"): ("references.links", _by("url")),
    ("references", "availIpds"): ("references.ipds", _ipd_key),
    ("results", "outcomeMeasures"): ("results.outcomeMeasures", _by("title")),
}

#: Raw paths seen in real records that the 2024-10 data model does not list: ``modelPredictions``
#: is in the 2.0.0 OpenAPI description; ``locations_nested`` is a copy of ``locations`` that one
#: recorded full record (NCT02513394) carries.
_EXTRA_RAW_PATHS: tuple[tuple[str, ...], ...] = (
    ("derivedSection", "miscInfoModule", "modelPredictions", "bmiLimits", "minBmi"),
    ("derivedSection", "miscInfoModule", "modelPredictions", "bmiLimits", "maxBmi"),
    ("protocolSection", "contactsLocationsModule", "locations_nested"),
)

_VERSION_HOLDER = ("derivedSection", "miscInfoModule", "versionHolder")


def _group(section: str, module: str) -> str:
    """The field-name prefix of one module of one section."""
    if section == "protocolSection":
        return _PROTOCOL_GROUPS.get(module) or module.removesuffix("Module")
    group, flat = _SECTIONS[section]
    return group if module in flat else f"{group}.{module.removesuffix('Module')}"


def _name(group: str, path: tuple[str, ...]) -> str:
    """The field name of the value at ``path`` (dict keys) inside a module."""
    if len(path) >= 2 and path[-2].endswith("DateStruct") and path[-1] in ("date", "type"):
        stem = path[-2].removesuffix("Struct")
        path = (*path[:-2], stem if path[-1] == "date" else stem + "Type")
    dotted = ".".join(path)
    return f"{group}.{_RENAMES.get((group, dotted), dotted)}"


def _sort_key(value: Any) -> tuple[int, str]:
    if isinstance(value, str):
        return (0, value)
    return (1, orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def _canon(value: Any) -> Any:
    """A copy of ``value`` with every list sorted, so that equality ignores list order."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_canon(v) for v in value), key=_sort_key)
    return value


def _walk(node: dict[str, Any], group: str, path: tuple[str, ...], snap: Snapshot) -> None:
    for key, value in node.items():
        sub = (*path, key)
        source = _ITEM_SOURCES.get((group, key)) if not path else None
        if source and isinstance(value, list) and all(isinstance(m, dict) for m in value):
            prefix, identity = source
            for member in value:
                name = f"{prefix}.{identity(member).lower()}"
                snap.items.setdefault(name, []).append(_canon(member))
        elif isinstance(value, dict):
            _walk(value, group, sub, snap)
        else:
            snap.fields[_name(group, sub)] = _canon(value)


def record_ids(study: Any) -> tuple[str, list[str]]:
    """A record's nctId and nctIdAliases; a record without a string nctId is unusable."""
    try:
        ident = study["protocolSection"]["identificationModule"]
        nct_id = ident["nctId"]
    except (KeyError, TypeError) as exc:
        raise FetchError("study record without protocolSection.identificationModule.nctId") from exc
    if not isinstance(nct_id, str):
        raise FetchError(f"study record has a non-string nctId: {nct_id!r}")
    aliases = ident.get("nctIdAliases") or []
    return nct_id, [a for a in aliases if isinstance(a, str)] if isinstance(aliases, list) else []


def normalize(study: dict[str, Any]) -> Snapshot:
    """Turn a full study record into a snapshot of named fields and identified items."""
    snap = Snapshot(nct_id=record_ids(study)[0])
    for section, body in study.items():
        if section == "hasResults":
            snap.fields["results.hasResults"] = body
        elif (section == "protocolSection" or section in _SECTIONS) and isinstance(body, dict):
            for module, content in body.items():
                group = _group(section, module)
                if section == _VERSION_HOLDER[0] and module == _VERSION_HOLDER[1]:
                    content = {k: v for k, v in content.items() if k != _VERSION_HOLDER[2]}
                if isinstance(content, dict):
                    _walk(content, group, (), snap)
                else:
                    snap.fields[group] = _canon(content)
        elif isinstance(body, dict):
            _walk(body, section, (), snap)
        else:
            snap.fields[section] = _canon(body)
    return snap


def content_hash(study: dict[str, Any]) -> str:
    """A hash of the record's content that ignores key order and the daily versionHolder.

    Cheap enough for every trial on every cycle: one orjson serialisation plus SHA-256 (half
    the cost of blake2b on CPUs with SHA instructions); the caller's dict is never modified
    (only the path down to versionHolder is copied).
    """
    body = study
    derived: Any = study.get("derivedSection")
    misc = derived.get("miscInfoModule") if isinstance(derived, dict) else None
    if isinstance(misc, dict) and "versionHolder" in misc:
        misc = {k: v for k, v in misc.items() if k != "versionHolder"}
        body = {**study, "derivedSection": {**derived, "miscInfoModule": misc}}
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:32]


def _model_paths(nodes: list[dict[str, Any]], path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Raw paths of the data model down to where normalize stops: scalars and lists."""
    for node in nodes:
        sub = (*path, node["name"])
        children = node.get("children")
        if children and not node["type"].endswith("[]"):
            yield from _model_paths(children, sub)
        else:
            yield sub


def _catalog_name(path: tuple[str, ...]) -> str:
    if path == ("hasResults",):
        return "results.hasResults"
    group = _group(path[0], path[1])
    source = _ITEM_SOURCES.get((group, path[2])) if len(path) >= 3 else None
    return f"{source[0]}.*" if source else _name(group, path[2:])


@cache
def _catalog() -> tuple[str, ...]:
    text = resources.files("monitor").joinpath("studies_metadata.json").read_text("utf-8")
    paths = [*_model_paths(json.loads(text), ()), *_EXTRA_RAW_PATHS]
    return tuple(sorted({_catalog_name(p) for p in paths if p != _VERSION_HOLDER}))


def catalog() -> list[str]:
    """Every field name normalize can produce, plus ``<prefix>.*`` for each item list.

    Derived from the official data model (``/api/v2/studies/metadata``, shipped as package data)
    through the same naming rules, so a user's glob can be checked against known fields.
    """
    return list(_catalog())
