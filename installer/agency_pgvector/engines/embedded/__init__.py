"""The embedded engine, by concern: layout (where things are), runtime (the binaries), config (the three files),
process (pg_ctl), systemd (start at boot), engine (observe -> plan_server, and the lifecycle)."""

from .engine import EmbeddedEngine, SharedEmbeddedEngine
from .runtime import PG_MAJOR

__all__ = ["PG_MAJOR", "EmbeddedEngine", "SharedEmbeddedEngine"]
