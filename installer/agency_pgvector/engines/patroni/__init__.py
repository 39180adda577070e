"""ENGINE=patroni: clusters of PostgreSQL members managed by Patroni with etcd (layout, etcd, supervise, cluster),
and the engine that puts a client's tenant on one (engine)."""

from .engine import PatroniEngine

__all__ = ["PatroniEngine"]
