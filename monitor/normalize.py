"""Turn one API v2 study record into named fields (the field model).

STUB: the field-model helper replaces the body of this module. The constants below are the
contract other modules rely on.
"""

from __future__ import annotations

from typing import Any

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


def normalize(study: dict[str, Any]) -> Snapshot:
    raise NotImplementedError


def content_hash(study: dict[str, Any]) -> str:
    raise NotImplementedError
