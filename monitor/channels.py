"""Where alerts go: email, signed webhooks and anything apprise can reach.

Every channel lives in one registry keyed by its kind; adding a channel is one class with
``@register("kind")``. A class's docstring is its help text (``trial-monitor`` prints it).
Channels never log a secret: targets are shown through :func:`redact`, and passwords and
webhook secrets are handed in by the caller rather than read here.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import inspect
import ipaddress
import re
import smtplib
import socket
import ssl
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any, ClassVar, Final, NamedTuple, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import apprise
import httpx
import orjson
import structlog

from monitor import __version__
from monitor.errors import NotifyError, UsageError
from monitor.model import Change
from monitor.significance import news_order, significance
from monitor.wording import describe, headline, shorten

log = structlog.get_logger(__name__)

STUDY_URL: Final = "https://clinicaltrials.gov/study/{nct_id}"
USER_AGENT: Final = f"trial-monitor/{__version__}"
PRIVATE_SETTING: Final = "[notify] allow_private_targets"
_NCT_ID: Final = re.compile(r"NCT\d{8}")


#: Among equally significant changes these lead, so a subject line opens with the status.
class DeliveryError(NotifyError):
    """A send failed; ``permanent`` says whether retrying the same alert can ever help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


# --------------------------------------------------------------------------- alert data


class AlertChange(NamedTuple):
    """One change as it travels to a channel, already judged and worded."""

    change: Change
    significance: str
    detected_at: str  # ISO-8601 UTC
    text: str


@dataclass(frozen=True)
class Alert:
    """Everything a channel needs to tell one subscriber about one trial."""

    subscription_id: int | str
    subscription_name: str
    nct_id: str
    title: str
    changes: list[AlertChange]
    idempotency_key: str
    unsubscribe: str  # how to stop these alerts, e.g. "trial-monitor unsubscribe 7"
    #: A daily or weekly digest of several trials: its title is its subject, and its lines
    #: name their trials; it is filed (and linked) under the first one.
    digest: bool = False
    url: str = field(init=False)
    history_url: str = field(init=False)

    def __post_init__(self) -> None:
        # The id lands in URLs and headers, so only the registry's own shape is accepted.
        if not _NCT_ID.fullmatch(self.nct_id):
            raise NotifyError(f"not a ClinicalTrials.gov id: {self.nct_id!r}")
        if not self.changes:
            raise NotifyError(f"alert for {self.nct_id} has no changes")
        url = STUDY_URL.format(nct_id=self.nct_id)
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "history_url", url + "?tab=history")

    def ordered(self) -> list[AlertChange]:
        """Most significant first, status before other fields; otherwise detection order."""

        return sorted(self.changes, key=lambda c: news_order(c.change.field, c.significance))

    def summary(self) -> str:
        """Subject line: "NCT…: status RECRUITING → SUSPENDED (+2 more changes)"."""
        if self.digest:
            return shorten(self.title, 150)
        first, rest = self.ordered()[0], len(self.changes) - 1
        text = f"{self.nct_id}: {shorten(headline(first.change), 150)}"
        if rest:
            text += f" (+{rest} more {'change' if rest == 1 else 'changes'})"
        return text


def alert_change(
    change: Change, detected_at: datetime | str, context: Mapping[str, Any] | None = None
) -> AlertChange:
    """Judge and word a change once, so every channel shows the same thing."""
    when = detected_at if isinstance(detected_at, str) else _iso(detected_at)
    return AlertChange(change, significance(change), when, describe(change, context))


def sample_alert(subscription_name: str = "notify test") -> Alert:
    """A realistic alert for ``notify test``; its key is fresh so receivers never dedupe it."""
    now = datetime.now(UTC)
    site = "locations.mayo clinic|rochester|minnesota|united states"
    context = {
        site: {"facility": "Mayo Clinic", "city": "Rochester", "state": "Minnesota"},
        "design.enrollmentType": "ESTIMATED",
    }
    changes = [
        Change("status.primaryCompletionDate", "changed", "2026-06", "2027-03"),
        Change("status.overallStatus", "changed", "RECRUITING", "SUSPENDED"),
        Change("status.whyStopped", "added", None, "Sponsor decision (test alert)"),
        Change(site, "changed", {"status": "RECRUITING"}, {"status": "COMPLETED"}),
        Change("design.enrollmentCount", "changed", 40, 60),
    ]
    return Alert(
        subscription_id="test",
        subscription_name=subscription_name,
        nct_id="NCT06871644",
        title="Clinical Study of CD7 CAR-T Cells for Relapsed/refractory Autoimmune Diseases",
        changes=[alert_change(c, now, context) for c in changes],
        idempotency_key=f"test-{uuid.uuid4().hex}",
        unsubscribe="this is a test alert; no subscription was changed",
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _plain_lines(alert: Alert) -> list[str]:
    return [f"- [{c.significance}] {c.text}" for c in alert.ordered()]


# --------------------------------------------------------------------------- secrets, SSRF

_SECRET_QUERY: Final = re.compile(r"(token|secret|key|pass|sig|auth|code)", re.IGNORECASE)
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z_.-]{1,32}")


def redact(url: str) -> str:
    """A target as it may appear in logs and listings: passwords and tokens masked.

    Apprise URLs use the plugin's own privacy form (it knows which path parts are tokens);
    other URLs keep the host and word-like path segments and mask everything else.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        plugin: Any = apprise.Apprise.instantiate(url)
        if plugin is not None:
            return str(plugin.url(privacy=True)).split("?", 1)[0]
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{scheme}://****"
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    if parts.username:
        netloc = f"{quote(parts.username)}{':****' if parts.password else ''}@{netloc}"
    path = "/".join(
        seg if not seg or _PLAIN_SEGMENT.fullmatch(seg) else "****" for seg in parts.path.split("/")
    )
    query = "&".join(
        f"{k}=****" if _SECRET_QUERY.search(k) else f"{k}={v}"
        for k, _, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address must not be a target, or None for a public unicast address."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    for attr, why in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(ip, attr):
            return why
    return None if ip.is_global else "non-public"


def resolve_target(
    host: str, port: int | None, *, allow_private: bool, must_resolve: bool = True
) -> list[str]:
    """Resolve ``host`` and refuse internal addresses (the SSRF guard for webhook and apprise).

    Every address the name resolves to must be public, so a name with one public and one
    internal record is refused too. Returns the addresses; empty when the name does not
    resolve and ``must_resolve`` is false (apprise "hosts" that are really topics or tokens).
    """
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        if must_resolve:
            raise UsageError(f"cannot resolve target host {host!r}: {exc}") from None
        return []
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if allow_private:
        return addresses
    for address in addresses:
        why = _refusal(ipaddress.ip_address(address.split("%", 1)[0]))
        if why:
            raise UsageError(
                f"target host {host!r} resolves to {why} address {address}; "
                f"set {PRIVATE_SETTING} = true to allow internal targets"
            )
    return addresses


# --------------------------------------------------------------------------- registry


class Channel(ABC):
    """Base of every channel: validate a target, then send alerts to it."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        target: str,
        *,
        settings: Mapping[str, Any] | None = None,
        secret: str | None = None,
        allow_private_targets: bool = False,
    ) -> None:
        self.target = target
        self.settings: Mapping[str, Any] = settings or {}
        self.secret = secret
        self.allow_private_targets = allow_private_targets

    @abstractmethod
    def validate_target(self, target: str) -> None:
        """Raise UsageError with a clear message when ``target`` cannot be used."""

    @abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver ``alert``; raise DeliveryError (a NotifyError) saying if it is permanent."""

    def display_target(self) -> str:
        """The target as it may be shown or logged."""
        return redact(self.target)

    def _checked(self, target: str) -> None:
        """Re-validate at send time (DNS may have changed); a bad target never heals."""
        try:
            self.validate_target(target)
        except UsageError as exc:
            raise DeliveryError(str(exc), permanent=True) from None

    def _sent(self, alert: Alert, **fields: Any) -> None:
        log.info("notify.sent", **self._log_fields(alert), **fields)

    def _failed(self, alert: Alert, message: str, *, permanent: bool) -> DeliveryError:
        log.warning("notify.failed", **self._log_fields(alert), error=message, permanent=permanent)
        return DeliveryError(
            f"{self.kind} to {self.display_target()}: {message}", permanent=permanent
        )

    def _log_fields(self, alert: Alert) -> dict[str, Any]:
        return {
            "channel": self.kind,
            "target": self.display_target(),
            "subscription_id": alert.subscription_id,
            "nct_id": alert.nct_id,
            "idempotency_key": alert.idempotency_key,
            "changes": len(alert.changes),
        }


CHANNELS: dict[str, type[Channel]] = {}
_C = TypeVar("_C", bound=type[Channel])


def register(kind: str) -> Callable[[_C], _C]:
    """Class decorator: make a channel available under ``kind``."""

    def add(cls: _C) -> _C:
        if kind in CHANNELS:
            raise ValueError(f"channel kind {kind!r} registered twice")
        cls.kind = kind
        CHANNELS[kind] = cls
        return cls

    return add


def channel_class(kind: str) -> type[Channel]:
    """The class registered for ``kind``; UsageError names the known kinds."""
    try:
        return CHANNELS[kind]
    except KeyError:
        raise UsageError(
            f"unknown channel {kind!r}: expected one of {', '.join(sorted(CHANNELS))}"
        ) from None


def create_channel(kind: str, target: str, **options: Any) -> Channel:
    """Build a channel of ``kind`` and validate its target before anything is stored."""
    channel = channel_class(kind)(target, **options)
    channel.validate_target(target)
    return channel


def channel_help() -> dict[str, str]:
    """Help text per kind, straight from each class docstring."""
    return {kind: inspect.cleandoc(cls.__doc__ or "") for kind, cls in sorted(CHANNELS.items())}


# --------------------------------------------------------------------------- email

_ADDRESS: Final = re.compile(
    r"[^@\s<>()\[\],;:\"\\]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}", re.UNICODE
)
SECURITY_MODES: Final = ("starttls", "tls", "none")


def _check_address(address: str, what: str) -> None:
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise UsageError(f"{what} is not a valid email address: {address!r}")


def _header(value: str, name: str) -> str:
    """A header value, refused outright if it could smuggle another header in."""
    if "\r" in value or "\n" in value:
        raise DeliveryError(f"refusing CR/LF in the {name} header", permanent=True)
    return value


@register("email")
class EmailChannel(Channel):
    """Email over SMTP. Target: the recipient address (researcher@example.org).

    Settings ([smtp]): host, port, security = "starttls" | "tls" | "none",
    username, from, timeout (seconds). The SMTP password comes from the environment or a
    secrets file, never from config text. Each alert is one message with a plain-text and an
    HTML part, links to the record and its history tab, and a List-Unsubscribe header.
    """

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        s = self.settings
        self.host = str(s.get("host") or "")
        self.security = str(s.get("security", "starttls"))
        self.port = int(s.get("port") or {"tls": 465, "starttls": 587}.get(self.security, 25))
        self.username = str(s.get("username") or "")
        self.sender = str(s.get("from") or "")
        self.timeout = float(s.get("timeout", 20))
        if not self.host:
            raise UsageError("[smtp] host is required for email alerts")
        if self.security not in SECURITY_MODES:
            raise UsageError(
                f"[smtp] security must be one of {', '.join(SECURITY_MODES)}, not {self.security!r}"
            )
        _check_address(self.sender, "[smtp] from (in config.toml)")
        if self.username and self.security == "none":
            raise UsageError(
                '[smtp] username is set but security = "none" would send the '
                "password unencrypted; use starttls or tls"
            )

    def validate_target(self, target: str) -> None:
        _check_address(target, "email target")

    def display_target(self) -> str:
        return self.target

    def build_message(self, alert: Alert) -> EmailMessage:
        """The complete message, so a preview shows exactly what would be sent."""
        msg = EmailMessage()
        msg["Subject"] = _header(alert.summary(), "Subject")
        msg["From"] = _header(formataddr(("trial-monitor", self.sender)), "From")
        msg["To"] = _header(self.target, "To")
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = _header(_message_id(alert.idempotency_key), "Message-ID")
        msg["List-Unsubscribe"] = _header(self._unsubscribe(alert), "List-Unsubscribe")
        msg["X-Trial-Monitor-Subscription"] = _header(alert.subscription_name, "subscription name")
        msg.set_content(_email_text(alert))
        msg.add_alternative(_email_html(alert), subtype="html")
        return msg

    def _unsubscribe(self, alert: Alert) -> str:
        """RFC 2369 wants a URI: the hint itself when it is one, else a mail to the sender."""
        if re.match(r"(https?|mailto):", alert.unsubscribe):
            return f"<{alert.unsubscribe}>"
        subject = quote(f"unsubscribe {alert.subscription_id}")
        return f"<mailto:{self.sender}?subject={subject}>"

    def send(self, alert: Alert) -> None:
        self._checked(self.target)
        msg = self.build_message(alert)
        try:
            self._deliver(msg)
        except smtplib.SMTPResponseException as exc:
            # 5xx (including a refused login) will fail the same way next time; 4xx may not.
            raise self._failed(
                alert, f"SMTP {exc.smtp_code} {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(code >= 500 for code in codes)
            raise self._failed(alert, f"recipient refused {codes}", permanent=permanent) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise self._failed(alert, f"server lacks a feature: {exc}", permanent=True) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise self._failed(alert, f"{type(exc).__name__}: {exc}", permanent=False) from None
        self._sent(alert, message_id=msg["Message-ID"])

    def _deliver(self, msg: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.secret or "")
            smtp.send_message(msg)


def _message_id(key: str) -> str:
    """``<key@trial-monitor>``; a key that is not msg-id safe is hashed, never pasted in."""
    if not re.fullmatch(r"[A-Za-z0-9._+=-]{1,200}", key):
        key = hashlib.sha256(key.encode()).hexdigest()
    return f"<{key}@trial-monitor>"


def _email_text(alert: Alert) -> str:
    lines = [
        alert.title,
        f"{alert.nct_id} changed ({len(alert.changes)} for your subscription "
        f"“{alert.subscription_name}”):",
        "",
        *_plain_lines(alert),
        "",
        f"Record: {alert.url}",
        f"History of changes: {alert.history_url}",
        "",
        f"To stop these alerts: {alert.unsubscribe}",
    ]
    return "\n".join(lines) + "\n"


def _email_html(alert: Alert) -> str:
    e = html.escape
    items = "\n".join(
        f"<li><strong>{e(c.significance)}</strong> {e(c.text)} "
        f"<small>(detected {e(c.detected_at)})</small></li>"
        for c in alert.ordered()
    )
    return (
        "<!doctype html><html><body>\n"
        f'<h2><a href="{e(alert.url)}">{e(alert.nct_id)}</a>: {e(alert.title)}</h2>\n'
        f"<p>{len(alert.changes)} change(s) for your subscription "
        f"&ldquo;{e(alert.subscription_name)}&rdquo;:</p>\n"
        f"<ul>\n{items}\n</ul>\n"
        f'<p><a href="{e(alert.url)}">View the record</a> &middot; '
        f'<a href="{e(alert.history_url)}">History of changes</a></p>\n'
        f"<p><small>To stop these alerts: {e(alert.unsubscribe)}</small></p>\n"
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- webhook

SIGNATURE_HEADER: Final = "X-Trial-Monitor-Signature"
TIMESTAMP_HEADER: Final = "X-Trial-Monitor-Timestamp"


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``"{timestamp}." + body`` with ``secret``."""
    raw = body.encode() if isinstance(body, str) else body
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """What a receiver runs: right signature and a timestamp within ``tolerance_s`` of now.

    The timestamp check stops replays of an old, correctly signed request.
    """
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def webhook_body(alert: Alert, sent_at: datetime) -> bytes:
    """The documented JSON body (see :class:`WebhookChannel`)."""
    payload = {
        "subscription": {"id": alert.subscription_id, "name": alert.subscription_name},
        "trial": {
            "nct_id": alert.nct_id,
            "title": alert.title,
            "url": alert.url,
            "history_url": alert.history_url,
        },
        "changes": [
            {
                "field": c.change.field,
                "change": c.change.change,
                "old": c.change.old,
                "new": c.change.new,
                "significance": c.significance,
                "detected_at": c.detected_at,
                "text": c.text,
            }
            for c in alert.ordered()
        ],
        "idempotency_key": alert.idempotency_key,
        "sent_at": _iso(sent_at),
    }
    return orjson.dumps(payload, default=str)


def _retryable(status: int) -> bool:
    return not (400 <= status < 500) or status in (408, 429)


@register("webhook")
class WebhookChannel(Channel):
    """Signed JSON POST to an http(s) URL. Target: the URL; secret: per-subscription key.

    Body: {"subscription": {"id", "name"}, "trial": {"nct_id", "title", "url",
    "history_url"}, "changes": [{"field", "change", "old", "new", "significance",
    "detected_at", "text"}], "idempotency_key", "sent_at"}. Headers: X-Trial-Monitor-Timestamp
    (Unix seconds), X-Trial-Monitor-Signature: sha256=HMAC-SHA256(secret, "{timestamp}." +
    body) in hex, Idempotency-Key. Any 2xx is delivered; 4xx other than 408/429 is permanent.
    Internal addresses are refused unless [notify] allow_private_targets = true.
    """

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        self.timeout = float(self.settings.get("timeout", 10))
        self.clock: Callable[[], float] = time.time

    def validate_target(self, target: str) -> None:
        self._resolve(target)

    def _resolve(self, target: str) -> tuple[httpx.URL, str, list[str]]:
        """The parsed URL, its IDNA host (as DNS and TLS see it) and its checked addresses."""
        try:
            url = httpx.URL(target)
        except (httpx.InvalidURL, TypeError) as exc:
            raise UsageError(
                f"webhook target is not a URL: {redact(str(target))} ({exc})"
            ) from None
        if url.scheme not in ("http", "https"):
            raise UsageError(f"webhook target must be http:// or https://, not {url.scheme!r}")
        if not url.host:
            raise UsageError(f"webhook target has no host: {redact(target)}")
        host = url.raw_host.decode("ascii")
        return url, host, resolve_target(host, url.port, allow_private=self.allow_private_targets)

    def send(self, alert: Alert) -> None:
        if not self.secret:
            raise self._failed(alert, "no signing secret", permanent=True)
        try:
            url, host, addresses = self._resolve(self.target)
        except UsageError as exc:
            raise self._failed(alert, str(exc), permanent=True) from None
        now = self.clock()
        body = webhook_body(alert, datetime.fromtimestamp(now, UTC))
        timestamp = str(int(now))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            "Idempotency-Key": _header(alert.idempotency_key, "Idempotency-Key"),
            # Connect to the address just checked, not to whatever DNS says a moment later.
            "Host": url.netloc.decode("ascii"),
        }
        pinned = url.copy_with(host=addresses[0])
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                response = client.post(pinned, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            raise self._failed(alert, f"{type(exc).__name__}", permanent=False) from None
        if not response.is_success:
            status = response.status_code
            raise self._failed(alert, f"HTTP {status}", permanent=not _retryable(status))
        self._sent(alert, status=response.status_code)


# --------------------------------------------------------------------------- apprise


def fit_message(
    lines: Iterable[str], limit: int, more_link: str, *, head: str = "", max_lines: int = 0
) -> str:
    """Join whole change lines under ``limit`` characters (and ``max_lines`` when set).

    What does not fit is replaced by "… and N more: <link>", so a short service never cuts a
    change in half and the reader knows where the rest is.
    """
    wanted = list(lines)
    prefix = [head] if head else []
    full = "\n".join([*prefix, *wanted, f"Full history: {more_link}"])
    if len(full) <= limit and (not max_lines or len(prefix) + len(wanted) + 1 <= max_lines):
        return full
    kept: list[str] = []
    for line in wanted[:-1]:
        tail = f"… and {len(wanted) - len(kept) - 1} more: {more_link}"
        candidate = [*prefix, *kept, line, tail]
        if len("\n".join(candidate)) > limit or (max_lines and len(candidate) > max_lines):
            break
        kept.append(line)
    text = "\n".join([*prefix, *kept, f"… and {len(wanted) - len(kept)} more: {more_link}"])
    return text if len(text) <= limit else shorten(text, limit)


@register("apprise")
class AppriseChannel(Channel):
    """Any service the apprise package knows, by its URL: json://, form://, ntfy://, slack://…

    The message lists the changes most significant first and is fitted to the service's body
    length limit at a whole change, ending with "… and N more" and the history link. Hosts
    that resolve to internal addresses are refused unless [notify] allow_private_targets = true.
    """

    def validate_target(self, target: str) -> None:
        self._plugin(target)

    def _plugin(self, target: str) -> Any:
        """The apprise plugin for ``target``, after the SSRF check of its host (if any)."""
        scheme = target.split("://", 1)[0].lower() if "://" in target else ""
        plugin = apprise.Apprise.instantiate(target) if scheme else None
        if plugin is None:
            raise UsageError(
                f"apprise does not understand {redact(target)!r} "
                f"(unknown scheme {scheme!r} or malformed URL)"
            )
        # Only services whose URL names a host talk to it; the others ("slack://tokens")
        # reach the vendor's fixed API. A host that does not resolve is a topic or token.
        if any("{host}" in t for t in getattr(plugin, "templates", ())) and plugin.host:
            resolve_target(
                str(plugin.host),
                getattr(plugin, "port", None),
                allow_private=self.allow_private_targets,
                must_resolve=False,
            )
        return plugin

    def send(self, alert: Alert) -> None:
        try:
            plugin = self._plugin(self.target)
        except UsageError as exc:
            raise self._failed(alert, str(exc), permanent=True) from None
        title = alert.summary()
        title_max = int(getattr(plugin, "title_maxlen", 250))
        limit = int(getattr(plugin, "body_maxlen", 32768))
        if title_max <= 0 or getattr(plugin, "overflow_amalgamate_title", False):
            limit -= len(title) + 2  # the service puts the title into the body
        body = fit_message(
            [f"[{c.significance}] {c.text}" for c in alert.ordered()],
            max(limit, 1),
            alert.history_url,
            head=alert.title if title_max > 0 else "",
            max_lines=int(getattr(plugin, "body_max_line_count", 0) or 0),
        )
        notifier = apprise.Apprise()
        notifier.add(plugin)
        if not notifier.notify(body=body, title=shorten(title, max(title_max, 1))):
            raise self._failed(alert, "service did not accept the notification", permanent=False)
        self._sent(alert)
