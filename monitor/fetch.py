"""Fetch study records from ClinicalTrials.gov API v2 in batches, politely and with retries.

One list request (``filter.ids``) fetches up to ``batch_size`` trials, so a 10,000-trial cycle
makes about 100 requests. Whatever goes wrong with one trial stays with that trial: an id the
list leaves out is asked for on its own, a 400 for a whole batch is split until the malformed
id is isolated, and a request that keeps failing marks its ids ``failed``. A failure is never
turned into "the trial changed" or "the trial was deleted"; only a confirmed 404 is.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
import structlog

from monitor import __version__
from monitor.errors import BadRequest, FetchError, NotFound
from monitor.normalize import record_ids

DEFAULT_USER_AGENT = f"trial-monitor/{__version__} (+https://github.com/trial-monitor)"
MAX_PAGE_SIZE = 1000
#: Statuses worth another try: rate limiting (429, and 403 which the registry's edge also uses
#: for throttling) and request timeout; every 5xx is retried too.
RETRY_STATUSES = frozenset({403, 408, 429})
#: Failures of the exchange itself that a later attempt may not meet.
_RETRY_EXCEPTIONS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.DecodingError,
)

log = structlog.get_logger()

T = TypeVar("T")


class _BadBody(Exception):
    """A 2xx answer whose body is not usable (not JSON, or not the expected shape)."""


@dataclass
class Batch:
    """The outcome for one batch of requested ids; every id lands in exactly one bucket.

    ``records`` maps the id as requested to its study (matched by nctId or nctIdAliases, so a
    record may carry another canonical nctId); ``not_found`` holds confirmed 404s;
    ``failed`` maps an id to why no record could be had (never evidence of a change).
    """

    ids: list[str]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _record_ids(study: Any) -> list[str]:
    """The nctId and nctIdAliases of a study, upper-cased; raises _BadBody without an nctId."""
    try:
        nct_id, aliases = record_ids(study)
    except FetchError as exc:
        raise _BadBody(str(exc)) from exc
    return [nct_id.upper(), *(a.upper() for a in aliases)]


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BadBody(f"invalid JSON body ({len(body)} bytes)") from exc


def _parse_page(body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    data = _parse_json(body)
    studies = data.get("studies") if isinstance(data, dict) else None
    if not isinstance(studies, list):
        raise _BadBody("list body without a 'studies' list")
    for study in studies:
        _record_ids(study)
    token = data.get("nextPageToken")
    return studies, token if isinstance(token, str) and token else None


def _parse_version(body: bytes) -> dict[str, Any]:
    data = _parse_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("dataTimestamp"), str):
        raise _BadBody("version body without dataTimestamp")
    return data


def _server_message(response: httpx.Response) -> str:
    """The registry's plain-text error message, trimmed so an HTML page cannot flood a log."""
    text = " ".join(response.text.split())
    return text[:200] or f"HTTP {response.status_code}"


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return f"connection error ({type(exc).__name__})"


def _says_not_found(response: httpx.Response) -> bool:
    """Whether a 404 is the registry's own verdict ("NCT number X not found").

    A 404 page from a proxy or a wrong base URL must not be read as "the trial was deleted".
    """
    return response.text.strip().lower().endswith("not found") and "<" not in response.text


class Fetcher:
    """Batched, paced, retrying client for the API v2 ``/studies`` and ``/version`` endpoints.

    ``pace`` is the minimum time between two request starts (retries included); ``sleep`` and
    ``clock`` are injectable so tests and the benchmark control time. ``requests`` counts every
    HTTP request made, for the cycle summary.
    """

    def __init__(
        self,
        base_url: str = "https://clinicaltrials.gov/api/v2",
        *,
        batch_size: int = 100,
        page_size: int = MAX_PAGE_SIZE,
        timeout: float = 30.0,
        pace: float = 1.0,
        user_agent: str = DEFAULT_USER_AGENT,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        retry_after_max: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.page_size = page_size
        self.pace = pace
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.requests = 0
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._last_start: float | None = None
        self._client = httpx.Client(
            timeout=timeout,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            follow_redirects=True,
            transport=transport,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------

    def iter_batches(self, ids: Sequence[str]) -> Iterator[Batch]:
        """Yield one Batch per ``batch_size`` ids (duplicates dropped), in the order given.

        Yielding batch by batch lets the caller store each one before the next is fetched,
        so memory stays flat however many trials are watched. Never raises a FetchError.
        """
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), self.batch_size):
            yield self._fetch_batch(unique[start : start + self.batch_size])

    def fetch_one(self, nct_id: str) -> dict[str, Any]:
        """Fetch one record; raises NotFound (404), BadRequest (400) or FetchError."""
        url = f"{self.base_url}/studies/{quote(nct_id, safe='')}"
        wanted = nct_id.strip().upper()

        def parse(body: bytes) -> dict[str, Any]:
            study = _parse_json(body)
            if wanted not in _record_ids(study):
                raise _BadBody(f"record does not carry {nct_id} as nctId or alias")
            return dict(study)

        return self._call(url, {"format": "json"}, parse)

    def version(self) -> dict[str, Any]:
        """``/version`` (apiVersion, dataTimestamp); raises FetchError when it cannot be had."""
        return self._call(f"{self.base_url}/version", None, _parse_version)

    # -- batches -----------------------------------------------------------------------------

    def _fetch_batch(self, ids: list[str]) -> Batch:
        batch = Batch(ids=ids)
        listable: list[str] = []
        for nct_id in ids:
            if not nct_id.strip() or any(sep in nct_id for sep in ",|"):
                # Would change the meaning of filter.ids; the registry cannot answer for it.
                batch.failed[nct_id] = "not an NCT id"
            else:
                listable.append(nct_id)
        self._fetch_group(listable, batch)
        for nct_id in listable:
            if nct_id in batch.records or nct_id in batch.failed:
                continue
            log.info("fetch.missing", nct_id=nct_id)
            try:
                batch.records[nct_id] = self.fetch_one(nct_id)
            except NotFound:
                batch.not_found.append(nct_id)
            except FetchError as exc:
                batch.failed[nct_id] = str(exc)
        return batch

    def _fetch_group(self, ids: list[str], batch: Batch) -> None:
        """List ``ids`` into ``batch``; on a 400, split in halves to isolate the bad id(s)."""
        if not ids:
            return
        try:
            self._list(ids, batch)
        except BadRequest as exc:
            if len(ids) == 1:
                batch.failed[ids[0]] = str(exc)
                return
            half = len(ids) // 2
            log.info("fetch.split", size=len(ids), reason=str(exc))
            self._fetch_group(ids[:half], batch)
            self._fetch_group(ids[half:], batch)
        except FetchError as exc:
            for nct_id in ids:
                if nct_id not in batch.records:
                    batch.failed[nct_id] = str(exc)

    def _list(self, ids: list[str], batch: Batch) -> None:
        """Follow nextPageToken for one filter.ids request, matching studies to asked ids."""
        wanted = {nct_id.strip().upper(): nct_id for nct_id in ids}
        params = {"filter.ids": ",".join(ids), "pageSize": str(self.page_size), "format": "json"}
        url = f"{self.base_url}/studies"
        seen_tokens: set[str] = set()
        while True:
            studies, token = self._call(url, params, _parse_page)
            for study in studies:
                for key in _record_ids(study):
                    if key in wanted:
                        batch.records[wanted[key]] = study
            if token is None:
                return
            if token in seen_tokens:
                raise FetchError(f"paging loop: nextPageToken {token} came back")
            seen_tokens.add(token)
            params["pageToken"] = token

    # -- one request, retried ----------------------------------------------------------------

    def _call(self, url: str, params: Mapping[str, str] | None, parse: Callable[[bytes], T]) -> T:
        """GET with pacing and retries; ``parse`` turns a 2xx body into T or raises _BadBody."""
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            self._wait_for_pace()
            self.requests += 1
            log.debug("fetch.request", url=url, attempt=attempt)
            retry_after: float | None = None
            try:
                response = self._client.get(url, params=params)
            except _RETRY_EXCEPTIONS as exc:
                reason = _describe(exc)
            except httpx.HTTPError as exc:
                log.warning("fetch.failed", url=url, attempts=attempt, reason=str(exc))
                raise FetchError(f"{type(exc).__name__}: {exc}") from exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        return parse(response.content)
                    except _BadBody as exc:
                        reason = str(exc)
                elif status == 404 and _says_not_found(response):
                    raise NotFound(_server_message(response))
                elif status == 400:
                    raise BadRequest(f"HTTP 400: {_server_message(response)}")
                elif status in RETRY_STATUSES or status >= 500:
                    reason = f"HTTP {status}"
                    retry_after = self._retry_after(response)
                else:
                    message = f"HTTP {status}: {_server_message(response)}"
                    log.warning("fetch.failed", url=url, attempts=attempt, reason=message)
                    raise FetchError(message)
            if attempt == self.max_attempts:
                break
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            log.info("fetch.retry", attempt=attempt, wait=wait, reason=reason, url=url)
            self._sleep(wait)
        log.warning("fetch.failed", url=url, attempts=self.max_attempts, reason=reason)
        raise FetchError(f"{reason} after {self.max_attempts} attempts")

    def _wait_for_pace(self) -> None:
        now = self._clock()
        if self._last_start is not None:
            wait = self._last_start + self.pace - now
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_start = now

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so many clients do not retry in step."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Seconds asked for by Retry-After (delta or HTTP-date), capped at retry_after_max."""
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        try:
            seconds = float(value)
            if not math.isfinite(seconds):
                return None
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
        return min(max(seconds, 0.0), self.retry_after_max)
