"""The landing watcher: turns files dropped into the landing location into Prefect events.

A file is claimed once it has stopped growing (same size on two polls): it is moved into
``processed/`` (an atomic rename; on S3 a copy then a delete) and a ``shopml.landing.file``
event is emitted with its new path. The ``ingest`` deployment's trigger turns the event into a
flow run. Claiming before emitting means a file is never ingested twice; if the event cannot be
sent, the file is moved back and tried again on the next poll.

Which importer reads a file: the first folder under the landing location when it is an
importer's name (``landing/cdnow/file.txt``), else a guess from the name (see
:func:`guess_kind`). Hidden files and ``*.tmp`` / ``*.part`` (uploads in progress) are ignored.
A file under an ``append/`` folder (``landing/append/canonical/orders-2026-12-01.jsonl``) adds
its rows to the current data instead of replacing it (see :func:`is_append`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENT = "shopml.landing.file"
PROCESSED = "processed"
APPEND = "append"
REJECTED = "rejected"
_IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial")

log = logging.getLogger("shopml.landing")


def guess_kind(path: str) -> str | None:
    """The importer for a landed path: an importer's name as a folder or in the file name,
    then the format (``.txt``/``.dat``: CDNOW; ``.xlsx``/``.parquet``: Online Retail; a folder
    of CSVs: Olist; another ``.csv``: Online Retail)."""
    from shopml.data.importers import IMPORTERS

    lowered = path.replace("\\", "/").lower()
    parts = lowered.rstrip("/").split("/")
    for part in parts[-3:]:
        for kind in IMPORTERS:
            if (
                part == kind
                or part.startswith(f"{kind}_")
                or part.startswith(f"{kind}-")
                or part.startswith(f"{kind}.")
            ):
                return kind
    name = parts[-1]
    for kind in IMPORTERS:
        if kind.replace("-", "_") in name or kind in name:
            return kind
    # By format, most specific first; a suffix-less name is a folder (Olist's CSVs).
    by_suffix = (
        (".txt", "cdnow"),
        (".dat", "cdnow"),
        (".xlsx", "online-retail"),
        (".parquet", "online-retail"),
        (".csv", "online-retail"),
        (".csv.gz", "online-retail"),
    )
    for suffix, kind in by_suffix:
        if name.endswith(suffix):
            return kind
    return "olist" if "." not in name else None


def is_append(path: str) -> bool:
    """Whether a landed file is an incremental load: it lies under an ``append/`` folder of
    the landing location (looked for after ``processed/``, where claimed files go)."""
    parts = path.replace("\\", "/").split("/")[:-1]
    if PROCESSED in parts:
        parts = parts[len(parts) - parts[::-1].index(PROCESSED) :]
    return APPEND in parts


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client for the configured endpoint (AWS when none)."""
    import boto3

    from shopml.settings import get_settings

    return boto3.client("s3", endpoint_url=get_settings().s3_endpoint_url)


def emit_landing_event(path: str, kind: str | None) -> None:
    """Emit the ``shopml.landing.file`` event for a claimed file (raises if not sent)."""
    from prefect.events import emit_event

    event = emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"shopml.landing.{uuid.uuid4().hex}",
            "prefect.resource.name": Path(path).name,
            "shopml.path": path,
            "shopml.kind": kind or "",
        },
        payload={"path": path, "kind": kind},
    )
    if event is None:
        raise RuntimeError("Prefect did not send the event (no API configured?)")


@dataclass
class LocalLanding:
    """Watch a local folder. ``emit(path, payload)`` is called once per claimed file."""

    root: Path
    emit: Callable[[str, str | None], None] = emit_landing_event
    _sizes: dict[Path, int] = field(default_factory=dict)

    def candidates(self) -> list[Path]:
        if not self.root.exists():
            return []
        found = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).parts
            if rel[0] in (PROCESSED, REJECTED) or any(x.startswith(".") for x in rel):
                continue
            if p.is_file() and not p.name.endswith(_IGNORED_SUFFIXES):
                found.append(p)
        return found

    def poll(self) -> list[str]:
        """Claim the files that stopped growing since the last poll; returns their new paths."""
        self.root.mkdir(parents=True, exist_ok=True)
        claimed = []
        seen = {}
        for path in self.candidates():
            size = path.stat().st_size
            seen[path] = size
            if self._sizes.get(path) != size:
                continue  # new or still being written: look again next poll
            claimed_path = self._claim(path)
            if claimed_path is not None:
                claimed.append(str(claimed_path))
        self._sizes = {p: s for p, s in seen.items() if p.exists()}
        return claimed

    def _claim(self, path: Path) -> Path | None:
        kind = guess_kind(str(path.relative_to(self.root)))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        sub = path.relative_to(self.root).parent
        if kind is None:
            dest = self.root / REJECTED / sub / f"{stamp}-{path.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            path.rename(dest)
            log.warning("%s: no importer reads it; moved to %s", path, dest)
            return None
        # Keep the importer folder in the new path, so the kind stays guessable from it.
        dest = self.root / PROCESSED / sub / f"{stamp}-{path.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.rename(dest)
        try:
            self.emit(str(dest.resolve()), kind)
        except Exception:
            dest.rename(path)  # not announced: put it back for the next poll
            raise
        log.info("landed %s (%s): event sent", dest, kind)
        return dest


@dataclass
class S3Landing:
    """Watch an S3 prefix (``s3://bucket/landing/``): claimed objects move under
    ``<prefix>processed/``."""

    uri: str
    emit: Callable[[str, str | None], None] = emit_landing_event
    client: Any = None
    _sizes: dict[str, int] = field(default_factory=dict)

    def poll(self) -> list[str]:
        client = self.client or s3_client()
        bucket, prefix = split_s3(self.uri.rstrip("/") + "/")
        seen: dict[str, int] = {}
        claimed = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                rel = key[len(prefix) :]
                first = rel.split("/", 1)[0]
                if (
                    not rel
                    or first in (PROCESSED, REJECTED)
                    or rel.endswith("/")
                    or Path(rel).name.startswith(".")
                    or rel.endswith(_IGNORED_SUFFIXES)
                ):
                    continue
                seen[key] = int(obj["Size"])
                if self._sizes.get(key) != seen[key]:
                    continue
                kind = guess_kind(rel)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                parent = str(Path(rel).parent)
                sub = "" if parent == "." else parent + "/"
                folder = PROCESSED if kind else REJECTED
                new_key = f"{prefix}{folder}/{sub}{stamp}-{Path(rel).name}"
                client.copy_object(
                    Bucket=bucket, Key=new_key, CopySource={"Bucket": bucket, "Key": key}
                )
                client.delete_object(Bucket=bucket, Key=key)
                if kind is None:
                    log.warning(
                        "s3://%s/%s: no importer reads it; moved to %s", bucket, key, new_key
                    )
                    continue
                try:
                    self.emit(f"s3://{bucket}/{new_key}", kind)
                except Exception:
                    client.copy_object(
                        Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": new_key}
                    )
                    client.delete_object(Bucket=bucket, Key=new_key)
                    raise
                claimed.append(f"s3://{bucket}/{new_key}")
        self._sizes = seen
        return claimed


def watch(
    landing: LocalLanding | S3Landing,
    interval_s: float = 5.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Poll until ``stop()`` says so; an error in one poll is logged and the loop goes on."""
    while not stop():
        try:
            landing.poll()
        except Exception:
            log.exception("landing poll failed; retrying in %.0f s", interval_s)
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline and not stop():
            time.sleep(min(0.2, interval_s))


def landing_for(settings: Any) -> LocalLanding | S3Landing:
    """The configured landing location: the S3 prefix when set, else the local folder."""
    if settings.landing_s3_prefix:
        return S3Landing(settings.landing_s3_prefix)
    return LocalLanding(Path(settings.landing))
