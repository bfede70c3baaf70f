"""What the simulator and every importer hand to the warehouse: a whole dataset in one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import pandas as pd

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse, WriteReport


@dataclass
class Dataset:
    """Canonical tables produced by one source, before contracts are applied.

    ``set_aside`` counts rows a source dropped on purpose before they became canonical rows
    (for example Online Retail lines with no customer), by table and reason, and
    ``meta["rows_read:<table>"]`` the raw lines a table came from, so that every import
    reconciles: raw lines = canonical rows + set aside, and canonical rows = accepted + repaired
    + quarantined (see :class:`~shopml.data.warehouse.TableLoad`).
    """

    source: str
    tables: dict[str, pd.DataFrame]
    set_aside: dict[str, dict[str, int]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def load(
        self, warehouse: Warehouse, mode: Literal["dataset", "upsert"] = "dataset"
    ) -> WriteReport:
        """Write this dataset to the warehouse in one transaction.

        ``dataset`` (the default) replaces the warehouse's dataset whole; ``upsert`` adds these
        rows to it, replacing the rows whose keys it already holds (an incremental load, e.g.
        a day of orders), with the same contracts, reconciliation and data versions.
        """
        meta = {"source": self.source, **self.meta}
        return warehouse.write_tables(
            self.tables, source=self.source, mode=mode, meta=meta, set_aside=self.set_aside
        )
