"""The fetcher: batching, paging, retries, pacing, and failures that stay failures."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from monitor import __version__
from monitor.errors import BadRequest, FetchError, NotFound
from monitor.fetch import DEFAULT_USER_AGENT, Batch, Fetcher
from monitor.standin import StandIn

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "tests" / "fixtures" / "studies"
HISTORY = ROOT / "monitor" / "demo_data" / "history"
TEMPLATE = (STUDIES / "NCT00001908.json").read_bytes()


class FakeTime:
    """A clock that only moves when the fetcher sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TopRandom(random.Random):
    """Full jitter pinned to its ceiling, so backoff waits are predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


def study(nct_id: str, aliases: list[str] | None = None) -> dict[str, Any]:
    """A real recorded record under another nctId."""
    data: dict[str, Any] = orjson.loads(TEMPLATE.replace(b"NCT00001908", nct_id.encode()))
    if aliases:
        data["protocolSection"]["identificationModule"]["nctIdAliases"] = aliases
    return data


def fake_id(n: int) -> str:
    return f"NCT9{n:07d}"


def page(*studies: dict[str, Any], token: str | None = None) -> bytes:
    body: dict[str, Any] = {"studies": list(studies)}
    if token:
        body["nextPageToken"] = token
    return orjson.dumps(body)


def list_ok(request: httpx.Request) -> httpx.Response:
    """Answer a list request with every asked id; a single request with its record."""
    if request.url.path.endswith("/studies"):
        ids = request.url.params["filter.ids"].split(",")
        return httpx.Response(200, content=page(*(study(i) for i in ids)))
    return httpx.Response(200, content=orjson.dumps(study(request.url.path.rsplit("/", 1)[1])))


def mock_fetcher(
    handler: Callable[[httpx.Request], httpx.Response], clock: FakeTime, **kwargs: Any
) -> Fetcher:
    kwargs.setdefault("pace", 0.0)
    return Fetcher(
        "https://ctgov.test/api/v2",
        sleep=clock.sleep,
        clock=clock.clock,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def scripted(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """Answer requests with these responses in turn, then with list_ok."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        if not queue:
            return list_ok(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def one_batch(fetcher: Fetcher, ids: list[str]) -> Batch:
    batches = list(fetcher.iter_batches(ids))
    assert len(batches) == 1
    return batches[0]


# -- unit tests on a mock transport -----------------------------------------------------------


def test_user_agent_and_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return list_ok(request)

    ids = [fake_id(n) for n in range(3)]
    with mock_fetcher(handler, FakeTime(), page_size=500) as fetcher:
        batch = one_batch(fetcher, ids)
    assert set(batch.records) == set(ids)
    assert batch.not_found == []
    assert batch.failed == {}
    assert seen[0].headers["User-Agent"] == DEFAULT_USER_AGENT
    assert DEFAULT_USER_AGENT.startswith(f"trial-monitor/{__version__} (+https://")
    assert dict(seen[0].url.params) == {
        "filter.ids": ",".join(ids),
        "pageSize": "500",
        "format": "json",
    }


def test_retry_on_429_honours_retry_after_seconds() -> None:
    clock = FakeTime()
    handler = scripted(httpx.Response(429, headers={"Retry-After": "7"}))
    with capture_logs() as logs, mock_fetcher(handler, clock, pace=1.0) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
        assert fetcher.requests == 2
    assert list(batch.records) == [fake_id(1)]
    assert clock.sleeps == [7.0]  # the 7 s wait also covers the 1 s pace
    retries = [e for e in logs if e["event"] == "fetch.retry"]
    assert len(retries) == 1
    assert retries[0]["attempt"] == 1
    assert retries[0]["wait"] == 7.0
    assert retries[0]["reason"] == "HTTP 429"
    assert retries[0]["url"] == "https://ctgov.test/api/v2/studies"
    assert retries[0]["log_level"] == "info"


def test_retry_after_http_date_and_cap() -> None:
    clock = FakeTime()
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    handler = scripted(
        httpx.Response(503, headers={"Retry-After": soon}),
        httpx.Response(403, headers={"Retry-After": "86400"}),
    )
    with mock_fetcher(handler, clock, retry_after_max=90.0) as fetcher:
        assert fetcher.fetch_one(fake_id(1))["protocolSection"]
    assert 25.0 < clock.sleeps[0] <= 30.0
    assert clock.sleeps[1] == 90.0


def test_backoff_grows_and_is_capped() -> None:
    clock = FakeTime()
    with (
        capture_logs() as logs,
        mock_fetcher(
            lambda _: httpx.Response(503),
            clock,
            max_attempts=6,
            backoff_initial=1.0,
            backoff_max=5.0,
            rng=TopRandom(),
        ) as fetcher,
    ):
        batch = one_batch(fetcher, [fake_id(1), fake_id(2)])
        assert fetcher.requests == 6
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert batch.records == {}
    assert batch.failed == dict.fromkeys((fake_id(1), fake_id(2)), "HTTP 503 after 6 attempts")
    assert [e["attempt"] for e in logs if e["event"] == "fetch.retry"] == [1, 2, 3, 4, 5]
    failed = [e for e in logs if e["event"] == "fetch.failed"]
    assert failed[0]["attempts"] == 6


def test_full_jitter_stays_under_the_ceiling() -> None:
    clock = FakeTime()
    fetcher = mock_fetcher(
        lambda _: httpx.Response(500),
        clock,
        max_attempts=8,
        backoff_initial=2.0,
        backoff_max=10.0,
        rng=random.Random(7),
    )
    with fetcher, pytest.raises(FetchError, match="HTTP 500 after 8 attempts"):
        fetcher.version()
    ceilings = [2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert len(clock.sleeps) == len(ceilings)
    assert all(0.0 <= s <= c for s, c in zip(clock.sleeps, ceilings, strict=True))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, "NCT number NCT99999999 not found", NotFound),
        (400, "Parameter `nctId` has incorrect format", BadRequest),
    ],
)
def test_404_and_400_are_not_retried(status: int, body: str, error: type[Exception]) -> None:
    clock = FakeTime()
    with mock_fetcher(lambda _: httpx.Response(status, text=body), clock) as fetcher:
        with pytest.raises(error, match=body.split()[-1]):
            fetcher.fetch_one("NCT99999999")
        assert fetcher.requests == 1
    assert clock.sleeps == []


def test_a_404_that_is_not_the_registrys_verdict_is_a_failure() -> None:
    page_404 = "<html><body><h1>404 Not Found</h1></body></html>"
    handler = scripted(httpx.Response(200, content=page()), httpx.Response(404, text=page_404))
    with mock_fetcher(handler, FakeTime()) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
    assert batch.not_found == []
    assert batch.failed == {fake_id(1): "HTTP 404: " + page_404}


def test_other_client_errors_fail_at_once() -> None:
    clock = FakeTime()
    with mock_fetcher(lambda _: httpx.Response(401, text="no"), clock) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
        assert fetcher.requests == 1
    assert batch.failed == {fake_id(1): "HTTP 401: no"}


def test_pace_between_request_starts() -> None:
    clock = FakeTime()
    starts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        starts.append(clock.now)
        clock.now += 0.25  # the request itself takes a quarter second
        return list_ok(request)

    ids = [fake_id(n) for n in range(3)]
    with mock_fetcher(handler, clock, pace=1.0, batch_size=1) as fetcher:
        batches = list(fetcher.iter_batches(ids))
    assert [list(b.records) for b in batches] == [[i] for i in ids]
    assert [b - a for a, b in itertools.pairwise(starts)] == [1.0, 1.0]
    assert clock.sleeps == [0.75, 0.75]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (page(study(fake_id(1)))[:-40], "invalid JSON body"),
        (b"<html><body>Down for maintenance</body></html>", "invalid JSON body"),
        (b'{"message": "ok"}', "without a 'studies' list"),
        (b'{"studies": {"NCT90000001": {}}}', "without a 'studies' list"),
        (b'{"studies": [{"protocolSection": {}}]}', "without protocolSection"),
    ],
)
def test_unusable_bodies_are_failed_not_records(body: bytes, reason: str) -> None:
    clock = FakeTime()
    with (
        capture_logs() as logs,
        mock_fetcher(lambda _: httpx.Response(200, content=body), clock, max_attempts=2) as fetcher,
    ):
        batch = one_batch(fetcher, [fake_id(1)])
        assert fetcher.requests == 2
    assert batch.records == {}
    assert reason in batch.failed[fake_id(1)]
    assert batch.failed[fake_id(1)].endswith("after 2 attempts")
    (retry,) = [e for e in logs if e["event"] == "fetch.retry"]
    assert reason in retry["reason"]


def test_timeouts_and_connection_errors_are_retried() -> None:
    clock = FakeTime()
    handler = scripted(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"))
    with capture_logs() as logs, mock_fetcher(handler, clock) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
    assert list(batch.records) == [fake_id(1)]
    reasons = [e["reason"] for e in logs if e["event"] == "fetch.retry"]
    assert reasons == ["timeout", "connection error (ConnectError)"]


def test_records_match_by_alias_and_ids_are_deduplicated() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=page(study(fake_id(2), aliases=["NCT00000001"])))

    with mock_fetcher(handler, FakeTime()) as fetcher:
        batch = one_batch(fetcher, ["NCT00000001", fake_id(2), "NCT00000001", "", "A,B"])
        assert fetcher.requests == 1
    assert batch.ids == ["NCT00000001", fake_id(2), "", "A,B"]
    assert batch.records["NCT00000001"] is batch.records[fake_id(2)]
    assert batch.failed == {"": "not an NCT id", "A,B": "not an NCT id"}


def test_fetch_one_refuses_a_record_for_another_trial() -> None:
    handler = scripted(*(httpx.Response(200, content=orjson.dumps(study(fake_id(9)))),) * 2)
    fetcher = mock_fetcher(handler, FakeTime(), max_attempts=2)
    with fetcher, pytest.raises(FetchError, match=f"does not carry {fake_id(1)}"):
        fetcher.fetch_one(fake_id(1))


def test_paging_loop_is_a_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=page(study(fake_id(1)), token="again"))

    with mock_fetcher(handler, FakeTime()) as fetcher:
        batch = one_batch(fetcher, [fake_id(1), fake_id(2)])
        assert fetcher.requests == 2
    assert list(batch.records) == [fake_id(1)]
    assert "paging loop" in batch.failed[fake_id(2)]


def test_version_parsed_or_fetch_error() -> None:
    body = (ROOT / "tests/fixtures/pages/version_hkm30_2026-08-20.json").read_bytes()
    with mock_fetcher(lambda _: httpx.Response(200, content=body), FakeTime()) as fetcher:
        assert fetcher.version()["dataTimestamp"] == "2026-08-19T09:00:06"
    with (
        mock_fetcher(lambda _: httpx.Response(200, text="[]"), FakeTime(), max_attempts=1) as f,
        pytest.raises(FetchError, match="dataTimestamp"),
    ):
        f.version()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="page_size"):
        Fetcher(page_size=1001)
    with pytest.raises(ValueError, match="batch_size"):
        Fetcher(batch_size=0)
    with pytest.raises(ValueError, match="max_attempts"):
        Fetcher(max_attempts=0)


# -- integration tests against a StandIn on loopback ------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[StandIn]:
    with StandIn() as standin:
        for n in range(300):
            standin.put(study(fake_id(n)))
        for path in sorted(STUDIES.glob("*.json")):
            if path.stat().st_size < 100_000:
                standin.put(orjson.loads(path.read_bytes()))
        yield standin


@pytest.fixture
def standin(api: StandIn) -> Iterator[StandIn]:
    api.clear_faults()
    api.clear_log()
    yield api
    api.clear_faults()


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


def real_fetcher(api: StandIn, clock: FakeTime, **kwargs: Any) -> Fetcher:
    kwargs.setdefault("timeout", 5.0)
    return Fetcher(api.base_url, sleep=clock.sleep, clock=clock.clock, **kwargs)


def list_requests(api: StandIn) -> list[Any]:
    return [r for r in api.requests if r.path == "/api/v2/studies"]


def test_250_ids_make_3_list_requests(standin: StandIn, clock: FakeTime) -> None:
    ids = [fake_id(n) for n in range(250)]
    with real_fetcher(standin, clock) as fetcher:
        batches = list(fetcher.iter_batches(ids))
        assert fetcher.requests == 3
    assert [len(b.records) for b in batches] == [100, 100, 50]
    assert all(b.records[i] == study(i) for b in batches for i in b.ids)
    assert standin.request_count == 3
    assert {r.headers["User-Agent"] for r in standin.requests} == {DEFAULT_USER_AGENT}
    assert clock.sleeps == [1.0, 1.0]  # the default pace, one request per second


def test_next_page_token_is_followed(standin: StandIn, clock: FakeTime) -> None:
    ids = [fake_id(n) for n in range(100)]
    with real_fetcher(standin, clock, page_size=40) as fetcher:
        batch = one_batch(fetcher, ids)
    assert list(batch.records) == ids
    tokens = [r.query.get("pageToken") for r in list_requests(standin)]
    assert len(tokens) == 3
    assert tokens[0] is None
    assert tokens[1]
    assert tokens[2]


def test_missing_id_is_fetched_alone_and_404_is_not_found(
    standin: StandIn, clock: FakeTime
) -> None:
    ids = ["NCT00001908", "NCT99999999", "NCT02213341"]
    with capture_logs() as logs, real_fetcher(standin, clock) as fetcher:
        batch = one_batch(fetcher, ids)
    assert set(batch.records) == {"NCT00001908", "NCT02213341"}
    assert batch.not_found == ["NCT99999999"]
    assert batch.failed == {}
    assert [r.path for r in standin.requests] == ["/api/v2/studies", "/api/v2/studies/NCT99999999"]
    assert [e["nct_id"] for e in logs if e["event"] == "fetch.missing"] == ["NCT99999999"]


def test_missing_id_that_fails_alone_is_failed(standin: StandIn, clock: FakeTime) -> None:
    standin.fail_with(502, "<html>Bad Gateway</html>", kind="single", times=2)
    with real_fetcher(standin, clock, max_attempts=2) as fetcher:
        batch = one_batch(fetcher, ["NCT00001908", "NCT99999999"])
    assert list(batch.records) == ["NCT00001908"]
    assert batch.failed == {"NCT99999999": "HTTP 502 after 2 attempts"}


def test_400_batch_is_split_to_isolate_the_bad_id(standin: StandIn, clock: FakeTime) -> None:
    ids = [fake_id(n) for n in range(10)]
    ids.insert(6, "NCT123")
    with capture_logs() as logs, real_fetcher(standin, clock) as fetcher:
        batch = one_batch(fetcher, ids)
    assert set(batch.records) == set(ids) - {"NCT123"}
    assert batch.failed == {
        "NCT123": "HTTP 400: Item 1 in parameter `filter.ids` has incorrect format"
    }
    assert batch.not_found == []
    splits = [e for e in logs if e["event"] == "fetch.split"]
    assert splits[0]["size"] == 11
    assert "Item 7 in parameter" in splits[0]["reason"]
    assert all(r.path == "/api/v2/studies" for r in standin.requests)


def test_429_with_retry_after_then_success(standin: StandIn, clock: FakeTime) -> None:
    standin.fail_with(429, "Too Many Requests", {"Retry-After": "3"}, kind="list")
    with capture_logs() as logs, real_fetcher(standin, clock) as fetcher:
        batch = one_batch(fetcher, [fake_id(1), fake_id(2)])
        assert fetcher.requests == 2
    assert list(batch.records) == [fake_id(1), fake_id(2)]
    assert clock.sleeps == [3.0]
    (retry,) = [e for e in logs if e["event"] == "fetch.retry"]
    assert (retry["attempt"], retry["wait"], retry["reason"]) == (1, 3.0, "HTTP 429")
    assert retry["url"] == f"{standin.base_url}/studies"


def test_500_then_success(standin: StandIn, clock: FakeTime) -> None:
    standin.fail_with(500, "Internal Server Error")
    with real_fetcher(standin, clock, rng=TopRandom(), backoff_initial=2.0) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
    assert list(batch.records) == [fake_id(1)]
    assert clock.sleeps == [2.0]


def test_html_page_with_200_then_success(standin: StandIn, clock: FakeTime) -> None:
    standin.fail_with(200, "<html><body>Maintenance</body></html>", {"Content-Type": "text/html"})
    with real_fetcher(standin, clock) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
    assert list(batch.records) == [fake_id(1)]
    assert standin.request_count == 2


@pytest.mark.parametrize(
    "inject",
    [
        lambda api: api.truncate(),
        lambda api: api.truncate(honest_length=False),
        lambda api: api.drop(),
    ],
    ids=["truncated", "short-content-length", "dropped"],
)
def test_broken_exchanges_are_retried_then_succeed(
    standin: StandIn, clock: FakeTime, inject: Callable[[StandIn], None]
) -> None:
    inject(standin)
    with capture_logs() as logs, real_fetcher(standin, clock) as fetcher:
        batch = one_batch(fetcher, [fake_id(1), "NCT00001908"])
        assert fetcher.requests == 2
    assert batch.records == {fake_id(1): study(fake_id(1)), "NCT00001908": study("NCT00001908")}
    assert len([e for e in logs if e["event"] == "fetch.retry"]) == 1


def test_broken_exchanges_that_persist_fail_cleanly(standin: StandIn, clock: FakeTime) -> None:
    standin.drop(times=2)
    standin.truncate(times=1)
    ids = [fake_id(n) for n in range(4)]
    with real_fetcher(standin, clock, batch_size=2, max_attempts=3) as fetcher:
        first, second = fetcher.iter_batches(ids)
    assert first.records == {}
    assert set(first.failed) == set(ids[:2])
    assert first.failed[ids[0]].startswith("invalid JSON body")
    assert first.failed[ids[0]].endswith("after 3 attempts")
    assert list(second.records) == ids[2:]


def test_slow_response_times_out_and_is_retried(standin: StandIn, clock: FakeTime) -> None:
    standin.delay(0.5, kind="list")
    with capture_logs() as logs, real_fetcher(standin, clock, timeout=0.1) as fetcher:
        batch = one_batch(fetcher, [fake_id(1)])
    assert list(batch.records) == [fake_id(1)]
    assert [e["reason"] for e in logs if e["event"] == "fetch.retry"] == ["timeout"]


def test_advance_serves_the_next_real_version(clock: FakeTime) -> None:
    files = sorted((HISTORY / "NCT04514484").glob("*.json"))
    with StandIn() as api, real_fetcher(api, clock) as fetcher:
        api.load_history(HISTORY)
        (before,) = fetcher.iter_batches(["NCT04514484"])
        assert api.advance("NCT04514484")
        (after,) = fetcher.iter_batches(["NCT04514484"])
    assert before.records["NCT04514484"] == orjson.loads(files[0].read_bytes())
    assert after.records["NCT04514484"] == orjson.loads(files[1].read_bytes())


def test_alias_and_fetch_one_and_version_on_loopback(standin: StandIn, clock: FakeTime) -> None:
    standin.put(study(fake_id(500), aliases=["NCT00000042"]))
    standin.data_timestamp = "2026-08-21T09:00:00"
    with real_fetcher(standin, clock) as fetcher:
        batch = one_batch(fetcher, ["NCT00000042"])
        assert fetcher.fetch_one("NCT00000042") == study(fake_id(500), aliases=["NCT00000042"])
        with pytest.raises(NotFound, match="NCT number NCT99999999 not found"):
            fetcher.fetch_one("NCT99999999")
        with pytest.raises(BadRequest, match="`nctId` has incorrect format"):
            fetcher.fetch_one("nope")
        assert fetcher.version() == {"apiVersion": "2.0.5", "dataTimestamp": "2026-08-21T09:00:00"}
    assert batch.records["NCT00000042"]["protocolSection"]["identificationModule"]["nctId"] == (
        fake_id(500)
    )
