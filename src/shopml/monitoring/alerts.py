"""Alerts: a JSON POST to a webhook in the shape Slack (and Mattermost, Teams' Slack-compatible
connectors, Discord's ``/slack`` endpoints) accept, and a log line, always.

The body has ``text`` (what chat tools show), ``blocks`` (Slack's richer layout) and ``shopml``
(the structured facts, for a receiver that automates on them). A webhook that fails is retried
twice and then reported in the decision; an alert never stops monitoring.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("shopml.monitoring")


@dataclass
class AlertResult:
    sent: bool
    status: int | None = None
    error: str | None = None
    payload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "status": self.status, "error": self.error}


def build_payload(
    usecase: str,
    severity: str,
    title: str,
    lines: list[str],
    facts: dict[str, Any],
) -> dict[str, Any]:
    icon = {
        "critical": ":rotating_light:",
        "warning": ":warning:",
        "resolved": ":white_check_mark:",
    }
    head = f"{icon.get(severity, '')} shopml {usecase}: {title}".strip()
    body = "\n".join(f"• {line}" for line in lines)
    return {
        "text": f"{head}\n{body}" if body else head,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            *(
                [{"type": "section", "text": {"type": "mrkdwn", "text": body[:2900]}}]
                if body
                else []
            ),
        ],
        "shopml": {"usecase": usecase, "severity": severity, "title": title, **facts},
    }


def send_alert(
    payload: dict[str, Any],
    url: str | None,
    *,
    timeout: float = 5.0,
    retries: int = 2,
) -> AlertResult:
    """Log the alert, and POST it to ``url`` when one is configured."""
    level = logging.INFO if payload["shopml"].get("severity") == "resolved" else logging.WARNING
    log.log(level, "ALERT %s", payload["text"].replace("\n", " | "))
    if not url:
        return AlertResult(
            False, error="no webhook configured (SHOPML_ALERT_WEBHOOK_URL)", payload=payload
        )
    data = json.dumps(payload, default=str).encode()
    error = None
    for attempt in range(retries + 1):
        req = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return AlertResult(True, status=resp.status, payload=payload)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            time.sleep(0.5 * (attempt + 1))
    log.error("alert webhook failed: %s", error)
    return AlertResult(False, error=error, payload=payload)


class LocalWebhook:
    """A webhook receiver on loopback that keeps every alert it is sent: for replays and tests
    that want to see the alerts without a chat tool. ``status`` is what it answers.

    >>> with LocalWebhook() as hook:
    ...     settings = Settings(alert_webhook_url=hook.url)
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.url = ""
        self._server: Any = None

    def __enter__(self) -> LocalWebhook:
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(json.loads(body or b"null"))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/alerts"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
