"""Online feature store: the latest features per entity, for lookups at request time.

:class:`OnlineStore` is the small interface serving needs (``write``, ``get``, ``get_many``);
:class:`SQLiteOnlineStore` is the embedded default (``<home>/online.sqlite``); Redis and
PostgreSQL (``redis_store``, ``postgres_store``, chosen by ``open_store``) share the interface.
"""

from shopml.online.store import ONLINE_ENTITIES, OnlineStore, SQLiteOnlineStore, open_store

__all__ = ["ONLINE_ENTITIES", "OnlineStore", "SQLiteOnlineStore", "open_store"]
