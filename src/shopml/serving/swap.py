"""Reloads that reach every worker of a service.

``shopml serve --workers N`` runs N processes, each with its own models; ``POST
/v1/admin/reload`` lands on one of them. That worker checks the registry, swaps in what moved,
then publishes the versions it now serves on a :class:`SwapBoard`, a small file the workers of
one service share: a generation counter (mapped into every worker's memory) and the versions
(use case -> version and what the registry said about it). Every worker compares the counter
with the last generation it adopted before it answers a request (:class:`CatchUp`: one read of
mapped memory), and when the counter moved, swaps in exactly the published versions first (the
publishing worker downloaded them into the serving cache: no registry call). So once the reload
has answered, every request, whichever worker takes it, is answered by the new versions.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import mmap
import os
import struct
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopml.serving.models import VersionInfo

if TYPE_CHECKING:
    from shopml.serving.models import ModelStore

log = logging.getLogger("shopml.serving")

_COUNTER = struct.Struct("<Q")  # the generation, at the start of the file
_PAGE = 4096


class SwapBoard:
    """The file the workers of one service share: a generation counter, then the JSON of the
    versions last published (written under an exclusive lock, read under a shared one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with open(fd, "r+b", closefd=False) as fh:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < _PAGE:  # the first worker creates it
                        fh.truncate(_PAGE)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _PAGE)
        finally:
            os.close(fd)

    def generation(self) -> int:
        """The generation last published (0: none yet). One read of shared memory."""
        value: int = _COUNTER.unpack_from(self._map, 0)[0]
        return value

    def publish(self, versions: dict[str, VersionInfo]) -> int:
        """Publish the versions every worker must serve; returns the new generation."""
        payload = json.dumps({uc: asdict(info) for uc, info in versions.items()}).encode()
        with self._locked(fcntl.LOCK_EX):
            data = self.path.with_suffix(".json")
            tmp = data.with_suffix(".tmp")
            tmp.write_bytes(payload)
            tmp.replace(data)
            generation = self.generation() + 1
            _COUNTER.pack_into(self._map, 0, generation)
        return generation

    def read(self) -> tuple[int, dict[str, VersionInfo]]:
        """The generation and the versions published with it."""
        with self._locked(fcntl.LOCK_SH):
            generation = self.generation()
            data = self.path.with_suffix(".json")
            raw = json.loads(data.read_bytes()) if data.exists() else {}
        return generation, {uc: VersionInfo(**info) for uc, info in raw.items()}

    def _locked(self, how: int) -> Any:
        board = self

        class Locked:
            def __enter__(self) -> None:
                self.fd = os.open(board.path, os.O_RDONLY)
                fcntl.flock(self.fd, how)

            def __exit__(self, *exc: object) -> None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)

        return Locked()

    def close(self) -> None:
        self._map.close()


class Swaps:
    """One worker's side of the board: publish after a reload, catch up before answering."""

    def __init__(self, board: SwapBoard, models: ModelStore) -> None:
        self.board = board
        self.models = models
        self.adopted = board.generation()  # a new worker loads what the registry says now
        self._lock = asyncio.Lock()

    def behind(self) -> bool:
        return self.board.generation() != self.adopted

    def publish(self) -> int:
        """After this worker's reload: every worker serves its versions from its next request."""
        served = {uc: m.info for uc in self.models.usecases if (m := self.models.get(uc))}
        self.adopted = self.board.publish(served)
        return self.adopted

    async def catch_up(self) -> None:
        """Swap in the published versions (once, however many requests are waiting)."""
        from fastapi.concurrency import run_in_threadpool

        async with self._lock:
            if not self.behind():
                return
            generation, versions = await run_in_threadpool(self.board.read)
            changes = await run_in_threadpool(self.models.adopt, versions)
            self.adopted = generation
            if changes:
                log.info("adopted a reload (generation %d): %s", generation, changes)


class CatchUp:
    """ASGI middleware: before a worker answers, it adopts any reload another worker
    published (:class:`Swaps`)."""

    def __init__(self, app: Any, swaps: Swaps) -> None:
        self.app = app
        self.swaps = swaps

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        swaps = self.swaps
        if swaps.board.generation() != swaps.adopted and scope["type"] == "http":
            await swaps.catch_up()
        await self.app(scope, receive, send)
