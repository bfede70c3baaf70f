"""``shopml serve`` against slow and careless clients on a real socket: a connection that sends
nothing, a request head dripped and never finished, a body announced and never sent are closed
after their deadline; well-behaved keep-alive requests are unaffected; the access log never
holds a query string's values (a key put in the URL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The deadlines under test are 1 s; a loaded machine may take much longer to notice.
BOUND_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, int]]:
    """``shopml serve --insecure-dev --access-log`` on an empty home (no models: the routes
    exist, the request handling under test does not need one) with 1-second deadlines."""
    work = tmp_path_factory.mktemp("limits")
    port = services.free_port()
    log_path = work / "serve.log"
    env = {
        **os.environ,
        "SHOPML_HOME": str(work / "home"),
        "SHOPML_SERVE_HEADER_TIMEOUT_SECONDS": "1",
        "SHOPML_SERVE_BODY_TIMEOUT_SECONDS": "1",
    }
    with log_path.open("w") as log:
        args = ["serve", "--insecure-dev", "--access-log", "--port", str(port)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopml.cli", *args],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            services.wait_http(f"http://127.0.0.1:{port}/health", timeout=300, proc=proc)
            yield port, log_path, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it never does."""
    sock.settimeout(BOUND_S)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {BOUND_S:.0f} s")
    except ConnectionResetError:
        pass
    return got


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND_S)


def test_a_silent_connection_is_closed(server: tuple[int, Path, int]) -> None:
    with connect(server[0]) as sock:
        assert closed_by_server(sock) == b""


def test_a_head_that_never_ends_is_closed(server: tuple[int, Path, int]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(b"POST /v1/clv/predict HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        assert closed_by_server(sock) == b""


def test_a_body_that_never_comes_is_closed(server: tuple[int, Path, int]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(
            b"POST /v1/clv/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
            b'{"customer'
        )
        assert closed_by_server(sock) == b""


def test_keep_alive_requests_still_work(server: tuple[int, Path, int]) -> None:
    with connect(server[0]) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b'"ok"' not in answer:
                chunk = sock.recv(65536)
                assert chunk, "closed in the middle of a keep-alive exchange"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")


def test_oversized_headers_are_refused(server: tuple[int, Path, int]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert closed_by_server(sock).startswith(b"HTTP/1.1 431")
    with connect(server[0]) as sock:  # the same, in small pieces: refused once over the cap
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            for _ in range(30):
                sock.sendall(b"X-Pad: " + b"b" * 1000 + b"\r\n")
            sock.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it closed before we finished sending
        assert closed_by_server(sock)[:12] in (b"HTTP/1.1 431", b"HTTP/1.1 400", b"")


def test_an_oversized_head_pipelined_behind_a_request_is_refused(
    server: tuple[int, Path, int],
) -> None:
    """The cap also holds for a second request sent in the same packet as the first: the
    connection is refused (400 or 431) and closed."""
    with connect(server[0]) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        got = closed_by_server(sock)
        assert b"HTTP/1.1 431" in got or b"HTTP/1.1 400" in got, got[:300]


def test_access_log_redacts_query_strings(server: tuple[int, Path, int]) -> None:
    import urllib.request

    port, log_path, _ = server
    url = f"http://127.0.0.1:{port}/health?api_key=s3cret-4f1a&probe=yes"
    with urllib.request.urlopen(url, timeout=BOUND_S) as resp:
        assert resp.status == 200
    deadline = time.monotonic() + BOUND_S
    while "/health?api_key=" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.2)
    text = log_path.read_text()
    assert "s3cret-4f1a" not in text and "probe=yes" not in text
    assert "/health?api_key=<redacted>&probe=<redacted>" in text


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def answer_to(port: int, head: bytes, body: Iterator[bytes]) -> bytes:
    """Send a request (its body from a thread, as fast as the server takes it) and read the
    answer's head and body; the server may answer before the body is all sent."""
    import threading

    with connect(port) as sock:

        def send() -> None:
            try:
                sock.sendall(head)
                for chunk in body:
                    sock.sendall(chunk)
            except OSError:
                pass  # the server closed first: what it answered is read below

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        head_end = got.index(b"\r\n\r\n") + 4
        length = int(got.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(got) < head_end + length:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        sender.join(timeout=BOUND_S)
        return got


def test_a_105_mb_body_is_refused_while_it_streams_in(server: tuple[int, Path, int]) -> None:
    """The body cap (1 MiB by default) holds for a declared length and for a chunked body, and
    the service's memory does not grow with the body it refuses (it read 105 MB whole and
    echoed it in a 422: +360 MB at its peak)."""
    port, _, pid = server
    size = 105 * 1024 * 1024
    mib = b"x" * (1024 * 1024)
    before = peak_rss_mib(pid)
    head = (
        b"POST /v1/clv/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: %d\r\n\r\n{"customer_id": "' % (size + 19)
    )
    answer = answer_to(port, head, iter([mib] * 105 + [b'"}']))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"1048576 bytes" in answer and b"xxxx" not in answer
    # No length declared: chunked, refused once past the cap.
    head = (
        b"POST /v1/clv/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (len(mib), mib)
    answer = answer_to(port, head, iter([chunk] * 105 + [b"0\r\n\r\n"]))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    grown = peak_rss_mib(pid) - before
    print(f"peak memory of the service grew by {grown:.1f} MiB for two 105 MB requests")
    assert grown < 40, f"the service's peak memory grew by {grown:.0f} MiB"
