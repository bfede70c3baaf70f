"""Which HTTP protocol the service runs: httptools' C parser when it is installed (it is, with
``uvicorn[standard]``), both with the slow-client deadlines."""

from __future__ import annotations

import importlib.util

from uvicorn.protocols.http.h11_impl import H11Protocol

from shopml.serving import http


def test_the_service_parses_http_with_httptools_when_installed() -> None:
    assert importlib.util.find_spec("httptools") is not None, "uvicorn[standard] brings httptools"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert issubclass(http.PROTOCOL, HttpToolsProtocol)
    assert issubclass(http.PROTOCOL, http.SlowClientDeadlines)


def test_the_h11_fallback_has_the_same_deadlines() -> None:
    assert issubclass(http.SlowClientH11, H11Protocol)
    assert issubclass(http.SlowClientH11, http.SlowClientDeadlines)
