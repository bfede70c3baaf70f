"""What the simulator and every importer hand to the warehouse: a whole dataset in one value."""

from __future__ import annotations

from collections.abc import Callable
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
    # Called before an append with the warehouse, to resolve what the file alone could not
    # (Online Retail matches cancellations to purchase lines loaded earlier).
    prepare_append: Callable[[Warehouse], None] | None = field(default=None, repr=False)

    def load(
        self, warehouse: Warehouse, mode: Literal["dataset", "upsert"] = "dataset"
    ) -> WriteReport:
        """Write this dataset to the warehouse in one transaction.

        ``dataset`` (the default) replaces the warehouse's dataset whole; ``upsert`` adds these
        rows to it, replacing the rows whose keys it already holds (an incremental load, e.g.
        a day of orders), with the same contracts, reconciliation and data versions.
        """
        meta = {"source": self.source, **self.meta}
        if mode == "dataset":
            self.check_complete()
        else:
            meta["source"] = self.check_appendable(warehouse)
            if self.prepare_append is not None:
                self.prepare_append(warehouse)
        return warehouse.write_tables(
            self.tables, source=self.source, mode=mode, meta=meta, set_aside=self.set_aside
        )

    def check_complete(self) -> None:
        """Refuse a dataset that would replace the warehouse's while its rows refer to a table
        it does not include (every such row would be quarantined as an orphan)."""
        from shopml.data.contracts import ContractError, get_contract

        for name, df in self.tables.items():
            for fk in get_contract(name).foreign_keys:
                cols = [c for c in fk.columns if c in df.columns]
                if fk.table in self.tables or not cols or not df[cols].notna().any().any():
                    continue
                raise ContractError(
                    f"{name} refer to {fk.table} ({', '.join(fk.columns)}), which this "
                    f"{self.source} import does not include: include {fk.table} too, or add "
                    "these rows to the current data with --append"
                )

    def check_appendable(self, warehouse: Warehouse) -> str:
        """The warehouse's source, after checking these rows may be added to it.

        Rows are added to data of the same source; shopml's canonical format can be added to
        any imported data (it is how a shop sends what it has since); nothing is added to the
        simulator's shop, which has no real customers to add to.
        """
        from shopml.data.warehouse import WarehouseError

        current = warehouse.get_meta("source")
        if current is None or current == self.source:
            return current or self.source
        if self.source == "canonical" and current != "simulator":
            return current
        raise WarehouseError(
            f"the warehouse holds {current} data; rows from {self.source} can only be added "
            f"to {self.source} data{' or imported data' if self.source == 'canonical' else ''}"
            ": import without --append to replace it"
        )
