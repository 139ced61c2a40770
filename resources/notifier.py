"""Alert delivery as a Dagster resource: the manifest's channels (Slack via dagster-slack, webhooks, the log)
and per-dataset healthchecks-style pings."""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
from dagster_slack import SlackResource

from backup_pipelines.manifest import LogChannel as LogChannelConfig
from backup_pipelines.manifest import SlackChannel, WebhookChannel, read_secret
from backup_pipelines.notify import Alert, CallableChannel, Channel, Delivery, LogChannel, Notifier, PingEvent, ping
from backup_pipelines.notify import WebhookChannel as Webhook
from resources.manifest import ManifestResource


def _slack(name: str, config: SlackChannel) -> Channel:
    def deliver(alert: Alert) -> None:
        client = SlackResource(token=read_secret(config.token_env, f"alerts.channels.{name}")).get_client()
        if config.base_url:
            client.base_url = config.base_url.rstrip("/") + "/"
        client.chat_postMessage(channel=config.channel, text=alert.text())

    return CallableChannel(name, deliver)


def _webhook(name: str, config: WebhookChannel) -> Channel:
    def deliver(alert: Alert) -> None:
        url = read_secret(config.url_env, f"alerts.channels.{name}")
        Webhook(name, url, config.retries, config.timeout_seconds).send(alert)

    return CallableChannel(name, deliver)


class NotifierResource(dg.ConfigurableResource):
    """Sends alerts to the channels the manifest configures (the log alone when it configures none)."""

    manifest: ManifestResource

    def notifier(self, logger: logging.Logger | Any = None) -> Notifier:
        """Return a Notifier for the manifest's channels; secrets are read when an alert is sent."""
        manifest = self.manifest.load()
        channels: dict[str, Channel] = {}
        for name, config in manifest.alerts.channels.items():
            if isinstance(config, SlackChannel):
                channels[name] = _slack(name, config)
            elif isinstance(config, WebhookChannel):
                channels[name] = _webhook(name, config)
            elif isinstance(config, LogChannelConfig):
                channels[name] = LogChannel(name, logger or logging.getLogger("backup_pipelines.alerts"))
        if not channels:
            channels["log"] = LogChannel("log", logger or logging.getLogger("backup_pipelines.alerts"))
        routes = {name: dataset.alerts.channels for name, dataset in manifest.datasets.items()}
        return Notifier(channels, routes)

    def send(self, alert: Alert, logger: logging.Logger | Any = None) -> Delivery:
        """Deliver one alert; return which channels got it."""
        return self.notifier(logger).send(alert)

    def ping(self, dataset: str, event: PingEvent, body: str = "") -> str | None:
        """Send the dataset's healthchecks-style ping, if it has one; return the error text or None."""
        variable = self.manifest.load().datasets[dataset].alerts.healthchecks_url_env
        if not variable:
            return None
        try:
            url = read_secret(variable, f"datasets.{dataset}.alerts.healthchecks_url_env")
        except Exception as error:
            return str(error)
        return ping(url, event, body)
