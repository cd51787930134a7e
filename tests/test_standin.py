"""The stand-in answers like the real API v2 (recorded bodies) and misbehaves on demand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from monitor.standin import Fault, StandIn

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "tests" / "fixtures" / "studies"
ERRORS = ROOT / "tests" / "fixtures" / "errors"
HISTORY = ROOT / "monitor" / "demo_data" / "history"


def load(nct_id: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((STUDIES / f"{nct_id}.json").read_bytes())
    return data


def nct(study: dict[str, Any]) -> str:
    value: str = study["protocolSection"]["identificationModule"]["nctId"]
    return value


@pytest.fixture
def api() -> Iterator[StandIn]:
    with StandIn() as standin:
        for path in sorted(STUDIES.glob("*.json"))[:6]:
            standin.put(orjson.loads(path.read_bytes()))
        yield standin


@pytest.fixture
def client(api: StandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=5) as http:
        yield http


def test_base_url_is_loopback_with_ephemeral_port(api: StandIn) -> None:
    assert api.base_url == f"http://127.0.0.1:{api.port}/api/v2"
    assert api.port > 0


def test_list_by_ids_comma_and_pipe_unknown_ids_absent(api: StandIn, client: httpx.Client) -> None:
    a, b = api.ids()[:2]
    for sep in (",", "|"):
        response = client.get("/studies", params={"filter.ids": f"{a}{sep}NCT99999999{sep}{b}"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        data = response.json()
        assert [nct(s) for s in data["studies"]] == [a, b]
        assert "nextPageToken" not in data
    assert client.get("/studies", params={"filter.ids": a}).json()["studies"][0] == load(a)


def test_list_pages_with_next_page_token(api: StandIn, client: httpx.Client) -> None:
    ids = api.ids()
    params = {"filter.ids": ",".join(ids), "pageSize": "4", "countTotal": "true"}
    first = client.get("/studies", params=params).json()
    assert first["totalCount"] == 6
    assert [nct(s) for s in first["studies"]] == ids[:4]
    second = client.get("/studies", params={**params, "pageToken": first["nextPageToken"]}).json()
    assert [nct(s) for s in second["studies"]] == ids[4:]
    assert "nextPageToken" not in second
    assert "totalCount" not in second


def test_bad_id_in_list_is_the_recorded_400(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    response = client.get("/studies", params={"filter.ids": "NCT123"})
    assert response.status_code == 400
    assert response.content == (ERRORS / "ct_search_bad.body.txt").read_bytes()
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    response = client.get("/studies", params={"filter.ids": f"{a}|{a}|bogus"})
    assert response.text == "Item 3 in parameter `filter.ids` has incorrect format"


def test_single_study_and_recorded_errors(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    response = client.get(f"/studies/{a}")
    assert response.status_code == 200
    assert response.json() == load(a)
    missing = client.get("/studies/NCT99999999")
    assert missing.status_code == 404
    assert missing.content == (ERRORS / "ct_single_miss.body.txt").read_bytes()
    assert missing.headers["content-type"] == "text/plain; charset=UTF-8"
    bad = client.get("/studies/NCT1")
    assert bad.status_code == 400
    assert bad.content == (ERRORS / "ct_single_bad.body.txt").read_bytes()


def test_aliases_resolve_to_the_canonical_record(api: StandIn, client: httpx.Client) -> None:
    study = load("NCT00001908")
    study["protocolSection"]["identificationModule"]["nctIdAliases"] = ["NCT00000001"]
    api.put(study)
    assert nct(client.get("/studies/NCT00000001").json()) == "NCT00001908"
    listed = client.get("/studies", params={"filter.ids": "NCT00000001,NCT00001908"}).json()
    assert [nct(s) for s in listed["studies"]] == ["NCT00001908"]
    api.put(load("NCT00001908"))  # a version without the alias forgets it
    assert client.get("/studies/NCT00000001").status_code == 404


def test_version_and_settable_timestamp(api: StandIn, client: httpx.Client) -> None:
    recorded = orjson.loads(
        (ROOT / "tests/fixtures/pages/version_hkm30_2026-08-20.json").read_bytes()
    )
    assert client.get("/version").json() == recorded
    api.data_timestamp = "2026-08-20T09:00:00"
    assert client.get("/version").json() == {
        "apiVersion": "2.0.5",
        "dataTimestamp": "2026-08-20T09:00:00",
    }


def test_remove(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    assert api.remove(a)
    assert not api.remove(a)
    assert client.get(f"/studies/{a}").status_code == 404


def test_history_advance_serves_next_real_version(client: httpx.Client, api: StandIn) -> None:
    loaded = api.load_history(HISTORY)
    assert "NCT04514484" in loaded
    files = sorted((HISTORY / "NCT04514484").glob("*.json"))
    recorded = [orjson.loads(f.read_bytes()) for f in files]
    assert api.versions("NCT04514484") == recorded
    assert client.get("/studies/NCT04514484").json() == recorded[0]
    for expected in recorded[1:]:
        assert api.advance("NCT04514484")
        assert client.get("/studies/NCT04514484").json() == expected
    assert not api.advance("NCT04514484")
    assert api.current("NCT04514484") == recorded[-1]
    assert not api.advance("NCT99999999")
    assert api.versions("NCT99999999") == []


def test_advance_all_moves_every_trial_with_a_next_version(api: StandIn) -> None:
    loaded = api.load_history(HISTORY)
    moved = api.advance_all()
    assert moved == [i for i in loaded if len(api.versions(i)) > 1]


def test_status_faults_in_order_and_filtered_by_kind(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    api.fail_with(429, "slow down", {"Retry-After": "7"}, kind="list")
    api.fail_with(503, kind="single", times=2)
    assert client.get("/version").status_code == 200  # neither fault matches /version
    assert client.get(f"/studies/{a}").status_code == 503
    throttled = client.get("/studies", params={"filter.ids": a})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "7"
    assert throttled.text == "slow down"
    assert api.pending_faults == 1
    assert client.get(f"/studies/{a}").status_code == 503
    assert client.get(f"/studies/{a}").status_code == 200
    assert api.pending_faults == 0


def test_html_error_page_with_200(api: StandIn, client: httpx.Client) -> None:
    page = b"<html><body><h1>Service maintenance</h1></body></html>"
    api.inject(Fault("respond", status=200, body=page, headers={"Content-Type": "text/html"}))
    response = client.get("/studies", params={"filter.ids": api.ids()[0]})
    assert response.status_code == 200
    assert response.content == page


def test_truncated_body_honest_and_dishonest_length(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    full = client.get(f"/studies/{a}").content
    api.truncate()
    short = client.get(f"/studies/{a}")
    assert short.content == full[: len(full) // 2]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(short.content)
    api.truncate(honest_length=False)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"/studies/{a}")
    assert client.get(f"/studies/{a}").content == full


def test_dropped_connection(api: StandIn, client: httpx.Client) -> None:
    api.drop(kind="version")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/version")
    assert client.get("/version").status_code == 200


def test_slow_response(api: StandIn, client: httpx.Client) -> None:
    api.delay(0.3, kind="version")
    with pytest.raises(httpx.ReadTimeout):
        client.get("/version", timeout=0.05)
    started = time.monotonic()
    api.delay(0.1)
    assert client.get("/version").status_code == 200
    assert time.monotonic() - started >= 0.1


def test_request_log_and_counter(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    client.get("/studies", params={"filter.ids": a, "pageSize": "5"}, headers={"User-Agent": "t/1"})
    client.get("/version")
    assert api.request_count == 2
    first = api.requests[0]
    assert (first.method, first.path) == ("GET", "/api/v2/studies")
    assert first.query == {"filter.ids": [a], "pageSize": ["5"]}
    assert first.headers["User-Agent"] == "t/1"
    api.clear_log()
    assert api.request_count == 0


def test_page_of_1000_out_of_10000_is_fast() -> None:
    template = (STUDIES / "NCT00001908.json").read_bytes()
    with StandIn() as api:
        ids = []
        for n in range(10_000):
            body = template.replace(b'"NCT00001908"', f'"NCT9{n:07d}"'.encode())
            ids.append(api.put(orjson.loads(body)))
        with httpx.Client(base_url=api.base_url, timeout=10) as http:
            started = time.monotonic()
            for chunk in range(0, 5000, 1000):
                params = {"filter.ids": ",".join(ids[chunk : chunk + 1000]), "pageSize": "1000"}
                data = http.get("/studies", params=params).json()
                assert len(data["studies"]) == 1000
            assert time.monotonic() - started < 3.0


def test_bad_page_size_and_token(api: StandIn, client: httpx.Client) -> None:
    a = api.ids()[0]
    assert client.get("/studies", params={"filter.ids": a, "pageSize": "1001"}).status_code == 400
    assert client.get("/studies", params={"filter.ids": a, "pageToken": "@@"}).status_code == 400


def test_put_requires_an_nct_id(api: StandIn) -> None:
    with pytest.raises(ValueError, match="nctId"):
        api.put({"protocolSection": {}})
    with pytest.raises(ValueError, match="at least once"):
        api.inject(Fault("drop", times=0))


def test_close_is_prompt_with_a_pending_slow_fault() -> None:
    api = StandIn().start()
    api.delay(30)
    with (
        httpx.Client(base_url=api.base_url, timeout=0.05) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.get("/version")
    started = time.monotonic()
    api.close()
    assert time.monotonic() - started < 2.0
