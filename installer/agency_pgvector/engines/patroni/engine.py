"""ENGINE=patroni: the client's tenant lives on a Patroni cluster (make pgvector-cluster makes one). Tenants are
provisioned through the leader (roles, databases and the extension reach the replicas by physical replication);
the .env lists every member, so libpq finds the leader after a failover with no change on the app's side."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UserError
from ...locks import client_lock
from ...report import CHANGE, OK
from ...runner import Step
from ..base import Capabilities, Endpoint, Engine, ServerPlan
from . import cluster
from .layout import ClusterLayout


@dataclass
class Observed:
    record: dict | None
    leader: str | None
    members: list[dict]
    rewinder_connects: bool | None = None  # None: not read (no leader)


REWINDER_GRANT = ("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a "
                  "WHERE d.datname OPERATOR(pg_catalog.=) 'postgres' AND a.privilege_type OPERATOR(pg_catalog.=) "
                  "'CONNECT' AND a.grantee OPERATOR(pg_catalog.=) 'rewinder'::pg_catalog.regrole)")


class PatroniEngine(Engine):
    name = "patroni"
    capabilities = Capabilities(owns_server=True, shared=True, logs=True, restart=True, remove=False, upgrade=False,
                                pool=False)
    service_roles = ("replicator", "rewinder")  # Patroni's streaming and pg_rewind logins (cluster.py's config)
    refusals = {
        "remove": "a cluster holds many clients: remove it with make pgvector-cluster-remove CLUSTER=... once empty",
        "upgrade": "moving a cluster to new PostgreSQL binaries (a rolling minor update, pg_upgrade of a cluster) is "
                   "not built yet; back the client up and restore it onto a new cluster",
        "pool": "PgBouncer in front of a cluster would not follow a failover (the .env lists every member instead); "
                "install without ENABLE_CLOUD",
    }

    def __init__(self, spec, cluster_name: str):
        super().__init__(spec)
        self.layout = ClusterLayout(cluster_name, spec.paths.state_dir)

    @property
    def label(self) -> str:
        return f"the Patroni cluster {self.layout.name}"

    def _record(self) -> dict:
        record = cluster.read_record(self.layout)
        if record is None:
            raise UserError(f"Cluster {self.layout.name} does not exist on this host: create it with make "
                            f"pgvector-cluster CLUSTER={self.layout.name} WITH_DEPS=true, then re-run.")
        cluster.refuse_joined(self.layout, record)
        return record

    def _leader(self) -> str:
        record = self._record()
        head = cluster.leader(record)
        if head is None:
            raise UserError(f"Cluster {self.layout.name} has no leader now (a failover under way, or its members are "
                            f"stopped): see make pgvector-cluster-status CLUSTER={self.layout.name}, then re-run.")
        if head not in record["members"]:  # the superuser logs in over the leader's own socket only
            raise UserError(f"The leader of cluster {self.layout.name} is {head}, on another host: tenants are provisioned "
                            f"through a leader on this host. Move the lead here (make pgvector-cluster-switchover "
                            f"CLUSTER={self.layout.name} CANDIDATE=<one of {', '.join(sorted(record['members']))}>; with "
                            "SYNC the synchronous standby), then re-run.")
        return head

    # -- converge -----------------------------------------------------------------------------------
    def observe(self) -> Observed:
        record = cluster.read_record(self.layout)
        seen = cluster.members(record) if record else []
        head = next((m["name"] for m in seen if m.get("role") == "leader" and m.get("state") == "running"), None)
        granted = None
        if head is not None:
            conn = self.admin_connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(REWINDER_GRANT)
                    granted = cur.fetchone()[0]
            finally:
                conn.close()
        return Observed(record, head, seen, granted)

    def plan_server(self, seen: Observed, create: bool) -> ServerPlan:
        if seen.record is None:
            self._record()  # raises the refusal
        if seen.leader is None:
            self._leader()
        detail = ", ".join(f"{m['name']} {m.get('role')}" for m in seen.members)
        steps = [Step(f"cluster {self.layout.name}", OK, detail)]
        # The tenant plan takes CONNECT on postgres from PUBLIC; pg_rewind (an old leader rejoining) logs in there.
        steps.append(Step("rewind login", OK if seen.rewinder_connects else CHANGE,
                          "rewinder may connect to postgres (pg_rewind when an old leader rejoins)",
                          run=None if seen.rewinder_connects else self._grant_rewinder))
        return ServerPlan(steps, reachable=True)

    def _grant_rewinder(self) -> None:
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("GRANT CONNECT ON DATABASE postgres TO rewinder")
        finally:
            conn.close()

    def recorded_server(self) -> str:
        return self.layout.name

    def server_lock(self):
        return client_lock(self.spec.paths.state_dir / "locks" / f"cluster-{self.layout.name}.lock", wait_seconds=300)

    def server_id(self) -> str:
        return f"patroni:{self.layout.name}"

    def pool_key(self) -> str:
        return f"cluster-{self.layout.name}"

    # -- reach --------------------------------------------------------------------------------------
    def endpoint(self) -> Endpoint:
        record = self._record()
        pg_port, _ = cluster.ports_of(record).members[self._leader()]
        return Endpoint(cluster.address(record), pg_port)

    def endpoints(self) -> list[Endpoint]:
        """This host's members, then those that joined from other hosts (make pgvector-cluster learns them)."""
        return [Endpoint(host, pg) for host, pg, _ in cluster.reach(self._record()).values()]

    def admin_params(self, dbname: str = "postgres") -> dict:
        head = self._leader()
        pg_port, _ = cluster.ports_of(self._record()).members[head]
        self._admin_member = head
        return dict(host=str(self.layout.socket_dir(head)), port=pg_port, user="postgres", dbname=dbname,
                    target_session_attrs="read-write")

    def expected_data_directory(self):
        head = getattr(self, "_admin_member", None) or self._leader()
        return self.layout.data_dir(head)

    def where(self) -> str:
        record = cluster.read_record(self.layout)
        head = cluster.leader(record) if record else None
        count = len(cluster.reach(record)) if record else 0
        return f"Patroni cluster {self.layout.name} ({count} members, leader {head or 'none now'})"

    # -- lifecycle ----------------------------------------------------------------------------------
    def logs(self, lines: int, follow: bool) -> None:
        """The leader's PostgreSQL log, the client's own sessions only."""
        self.member_logs(cluster.leader(self._record()) or "m1", lines, follow)

    def log_members(self) -> list[str]:
        return sorted(self._record()["members"])

    def member_logs(self, member: str, lines: int, follow: bool) -> None:
        """One member's PostgreSQL log (make pgvector-logs MEMBER=m2), the client's own sessions only."""
        from ...ops.logs import SessionFilter, show_server_log
        from ...provision import Tenant

        tenant = Tenant.for_client(self.spec.client_id, True)
        show_server_log(self.layout.log_dir(member) / "postgresql.log", self.layout.member_dir(member),
                        SessionFilter(tenant.role, tenant.database), lines, follow)

    def restart(self) -> None:
        cluster.rolling_restart(self.layout)

    def check_alive(self) -> None:
        return None

    def forget(self) -> None:
        return None
