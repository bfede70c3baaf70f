"""Object storage: pyarrow's S3 filesystem as every part of shopml that reads or writes
``s3://`` opens it (batch inputs and outputs, the Spark engine's lake)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopml.settings import Settings


def s3_filesystem(settings: Settings) -> Any:
    """pyarrow's S3 filesystem on ``SHOPML_S3_ENDPOINT_URL`` (or AWS) with the environment's
    credentials."""
    from pyarrow import fs

    endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        )
    kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    # A wrong endpoint or a missing bucket must fail in seconds, not after minutes of retries.
    kwargs.update(connect_timeout=10, request_timeout=60)
    return fs.S3FileSystem(**kwargs)
