"""What the simulator and every importer hand to the warehouse: a whole dataset in one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse, WriteReport


@dataclass
class Dataset:
    """Canonical tables produced by one source, before contracts are applied.

    ``set_aside`` counts rows a source dropped on purpose before they became canonical rows
    (for example Online Retail lines with no customer), by table and reason, so that every
    import still reconciles: rows read = accepted + quarantined + set aside.
    """

    source: str
    tables: dict[str, pd.DataFrame]
    set_aside: dict[str, dict[str, int]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def load(self, warehouse: Warehouse) -> WriteReport:
        """Replace the warehouse's dataset with this one, in one transaction."""
        meta = {"source": self.source, **self.meta}
        return warehouse.write_tables(
            self.tables, source=self.source, mode="dataset", meta=meta, set_aside=self.set_aside
        )
