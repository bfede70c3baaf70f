"""The HTTP connection's limits against slow clients, and a redacted access log.

uvicorn's HTTP protocols have a keep-alive timeout between requests but no deadline for a
request itself: a client that connects and sends nothing, drips its headers a byte at a time,
or announces a body and never sends it holds a connection (and, for a body, a request task) for
as long as it likes; a few hundred such clients exhaust a worker (slowloris).
:class:`SlowClientDeadlines` closes a connection whose request head is not complete
``serve_header_timeout_seconds`` after its first byte (or after the connection opened), and one
whose body is not complete ``serve_body_timeout_seconds`` after its head; the application then
sees the client as gone. Request heads are capped at :data:`MAX_HEAD_BYTES` (16 KiB; larger is
a 431), connections per worker at ``serve_max_connections`` (503 beyond), idle keep-alive at
``serve_keepalive_seconds``.

The deadlines are a mixin over uvicorn's protocol classes: :data:`PROTOCOL` is the one the
service runs, httptools' (llhttp, a C parser) when it is installed, as it is with
``uvicorn[standard]``, else h11's (pure Python). The parser is most of the request path's cost
outside the model: on 2026-12-04 one worker answered 2,500 predictions/s over h11 and 4,300 over
httptools (docs/how-to/serve.md).

:class:`RedactQuery` blanks query-string values on the access log: a key a client put in the URL
(``?api_key=...``) is never written to it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from copy import deepcopy
from typing import Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("shopml.serving")

# Largest request head (request line and headers); h11's own default, stated here.
MAX_HEAD_BYTES = 16 * 1024


class SlowClientDeadlines:
    """Deadlines for a request's head and body, and a cap on the head's size, over one of
    uvicorn's HTTP protocols (mixed in before it: both keep the request in progress as
    ``self.cycle`` with ``more_body`` and ``response_complete``)."""

    cycle: Any
    transport: Any
    loop: Any
    client: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from shopml.settings import get_settings

        settings = get_settings()
        self.header_timeout = settings.serve_header_timeout_seconds
        self.body_timeout = settings.serve_body_timeout_seconds
        self._deadline: asyncio.TimerHandle | None = None
        self._timed_cycle: Any = None
        self._head_size = 0  # bytes of the request head received so far
        self._head_tail = b""  # its last bytes, to find a terminator split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        # Also a connection that never sends a byte.
        self._arm(self.header_timeout, "request head")

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and self._deadline is None:
            self._arm(self.header_timeout, "request head")  # a new request starts arriving
        if (cycle is None or not cycle.more_body) and self._head_too_large(data):
            # Every byte after a complete body belongs to the next request's head (also one
            # pipelined behind a response still being computed).
            return
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not None and cycle is not self._timed_cycle:
            # The head was parsed and the request handed to the app: now its body, if any.
            self._timed_cycle = cycle
            self._disarm()
            if cycle.more_body:
                self._arm(self.body_timeout, "request body")
        elif cycle is not None and not cycle.more_body and self._timed_cycle is cycle:
            self._disarm()

    def _head_too_large(self, data: bytes) -> bool:
        """Count the bytes of the request head being received; over :data:`MAX_HEAD_BYTES`,
        answer 431 and close. (h11's own limit only holds for a head split over several
        reads: one that arrives whole is parsed whatever its size.)"""
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        size = self._head_size + (end + 4 - len(self._head_tail) if end >= 0 else len(data))
        if size > MAX_HEAD_BYTES:
            log.warning("refusing a request head of more than %d bytes", MAX_HEAD_BYTES)
            body = f"request head over {MAX_HEAD_BYTES} bytes\n".encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            self._disarm()
            self.transport.close()
            return True
        if end >= 0:
            self._head_size, self._head_tail = 0, b""  # complete: the next head starts afresh
        else:
            self._head_size, self._head_tail = size, seen[-3:]
        return False

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning(
            "closing the connection of %s: %s not received within %g s", client, what, seconds
        )
        # The app, if it is waiting for the body, sees the client as gone (http.disconnect).
        self.transport.close()


class SlowClientH11(SlowClientDeadlines, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with the deadlines."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 serves
    PROTOCOL: type[asyncio.Protocol] = SlowClientH11
else:

    class SlowClientHttpTools(SlowClientDeadlines, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp) with the deadlines. The parser's callbacks
        also count each head's bytes: a head pipelined behind another one in the same read
        (which the check on arrival does not see) is refused with a 400 once over the cap."""

        _parsed_head = 0

        def on_message_begin(self) -> None:
            self._parsed_head = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            self._parsed_head += size
            if self._parsed_head > MAX_HEAD_BYTES:
                # Raised in a parser callback: uvicorn answers 400 and closes the connection.
                raise ValueError(f"request head over {MAX_HEAD_BYTES} bytes")

    PROTOCOL = SlowClientHttpTools


_QUERY_VALUE = re.compile(r"=([^&]*)")


def redact_query(path: str) -> str:
    """``/x?api_key=s3cret&k=1`` -> ``/x?api_key=<redacted>&k=<redacted>``."""
    head, sep, query = path.partition("?")
    if not sep:
        return path
    return f"{head}?{_QUERY_VALUE.sub('=<redacted>', query)}"


class RedactQuery(logging.Filter):
    """Blanks the values of the query string in uvicorn's access-log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn: '%s - "%s %s HTTP/%s" %d' % (client, method, path with query, version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_query(args[2]), args[3], args[4])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`RedactQuery` on the access log (applied in
    every worker process)."""
    config = deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": f"{__name__}.RedactQuery"}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config
