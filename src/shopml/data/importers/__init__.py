"""Importers: turn the files shops and public datasets really use into a canonical Dataset.

Each importer reads its input, maps it to the canonical tables and returns a
:class:`~shopml.data.dataset.Dataset` without writing anything; ``Dataset.load(warehouse)`` then
applies the contracts. Rows an importer drops on purpose are counted in ``Dataset.set_aside``
by table and reason, and the raw line counts are in ``Dataset.meta["rows_read:<table>"]``, so
that raw lines = canonical rows + set aside, and canonical rows = accepted + quarantined.
A wrong input raises :class:`ImportFormatError` (one sentence naming the file and the problem)
before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shopml.data.dataset import Dataset
from shopml.data.importers import canonical, cdnow, olist, online_retail
from shopml.data.importers._common import ImportFormatError

read_olist = olist.read
read_online_retail = online_retail.read
read_cdnow = cdnow.read
read_canonical = canonical.read

IMPORTERS: dict[str, Callable[[Path], Dataset]] = {
    "olist": olist.read,
    "online-retail": online_retail.read,
    "cdnow": cdnow.read,
    "canonical": canonical.read,
}

__all__ = [
    "IMPORTERS",
    "ImportFormatError",
    "read_canonical",
    "read_cdnow",
    "read_olist",
    "read_online_retail",
]
