"""Alerts: what happened to which dataset, delivered to the channels people already watch.

`Alert` is the message; channels deliver it: the log, a generic JSON webhook (with retries and backoff), and
Slack (through dagster-slack, wired in `resources/notifier.py`). `ping` sends healthchecks-style
start/success/fail pings. Secrets (tokens, URLs with keys) come from environment variables named in the
manifest. A delivery failure is logged and reported back, never raised into the backup it reports on: the
sensors keep an alert pending (and skip the channels that already have it) until every channel has taken it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

LOG = logging.getLogger("backup_pipelines.alerts")

AlertKind = Literal["stale", "reminder", "recovered", "failure", "anomaly", "finding"]


@dataclass(frozen=True)
class Alert:
    """One alert about one dataset (or run)."""

    kind: AlertKind
    dataset: str
    title: str
    message: str
    partition: str | None = None
    run_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The alert as one human paragraph, for chat and logs."""
        parts = [f"[{self.kind.upper()}] {self.title}", self.message]
        if self.partition:
            parts.append(f"partition {self.partition}")
        if self.run_url:
            parts.append(self.run_url)
        return " | ".join(parts)

    def payload(self) -> dict[str, Any]:
        """The alert as the JSON object a webhook receives."""
        return {"source": "backup-pipelines", **asdict(self)}


class Channel(Protocol):
    """Something that delivers alerts. `send` raises on failure; `Notifier` catches and reports it."""

    name: str

    def send(self, alert: Alert) -> None: ...


class LogChannel:
    """Writes alerts to a Python logger (Dagster's, inside a run or sensor)."""

    def __init__(self, name: str, logger: logging.Logger | Any = LOG) -> None:
        self.name = name
        self.logger = logger

    def send(self, alert: Alert) -> None:
        self.logger.warning(alert.text())


def post_json(url: str, body: dict[str, Any], timeout: float) -> int:
    """POST `body` as JSON to `url`; return the HTTP status. Raise urllib errors on failure."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status: int = response.status
        return status


class WebhookChannel:
    """POSTs the alert's JSON to a URL, retrying network errors and 5xx answers with exponential backoff."""

    def __init__(self, name: str, url: str, retries: int = 3, timeout: float = 10.0, backoff: float = 0.5) -> None:
        self.name = name
        self.url = url
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff

    def send(self, alert: Alert) -> None:
        for attempt in range(self.retries + 1):
            try:
                post_json(self.url, alert.payload(), self.timeout)
                return
            except urllib.error.HTTPError as error:
                if error.code < 500 or attempt == self.retries:
                    raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if attempt == self.retries:
                    raise
            time.sleep(self.backoff * 2**attempt)


class CallableChannel:
    """Delivers with a function: how the Slack client from dagster-slack plugs in."""

    def __init__(self, name: str, deliver: Callable[[Alert], None]) -> None:
        self.name = name
        self.deliver = deliver

    def send(self, alert: Alert) -> None:
        self.deliver(alert)


@dataclass
class Delivery:
    """Which channels got an alert and which failed (with why)."""

    delivered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when no channel failed: the alert has reached every channel it was owed to."""
        return not self.failed


class Notifier:
    """Sends each alert to the channels of its dataset."""

    def __init__(self, channels: dict[str, Channel], routes: dict[str, list[str] | None] | None = None) -> None:
        self.channels = channels
        self.routes = routes or {}

    def channels_for(self, dataset: str) -> list[Channel]:
        names = self.routes.get(dataset)
        return [channel for name, channel in self.channels.items() if names is None or name in names]

    def send(self, alert: Alert, skip: Collection[str] = ()) -> Delivery:
        """Deliver `alert` to every channel of its dataset except those named in `skip` (which already have it,
        from an earlier attempt); return what was delivered and what failed."""
        delivery = Delivery()
        for channel in self.channels_for(alert.dataset):
            if channel.name in skip:
                continue
            try:
                channel.send(alert)
                delivery.delivered.append(channel.name)
            except Exception as error:
                delivery.failed[channel.name] = f"{type(error).__name__}: {error}"
                LOG.error(f"alert delivery to {channel.name} failed: {error}")
        return delivery


PingEvent = Literal["start", "success", "fail"]


def ping_url(base: str, event: PingEvent) -> str:
    """Return the healthchecks-style URL of `event`: `<base>/start`, `<base>`, `<base>/fail`."""
    base = base.rstrip("/")
    return {"start": f"{base}/start", "success": base, "fail": f"{base}/fail"}[event]


def ping(base: str, event: PingEvent, body: str = "", timeout: float = 10.0) -> str | None:
    """Send a healthchecks-style ping; return None on success or the error text (never raises)."""
    request = urllib.request.Request(ping_url(base, event), data=body.encode()[:10_000], method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as error:
        LOG.error(f"healthchecks ping {event} failed: {error}")
        return str(error)
