"""Checks of a Redis deployment against what the engine's guarantees need.

`aiojobs-redis doctor` prints them; `check_on_start` logs them when a worker starts.
Each check says what is wrong and what to change:

  version      Redis older than 6.0 cannot run the engine (fractional BLPOP timeouts, Lua
               scripts that read TIME before writing); 6.0 is past its end of life
  cluster      on a Cluster: how many primaries and replicas (a note); a Cluster node reached
               through a single-server URL is an error (the engine would get MOVED errors)
  sentinel     behind Sentinel: which server is the primary now (a note)
  replica      the URL (or Sentinel, or the Cluster's slot map) points at a read-only replica
  eviction     a maxmemory-policy other than noeviction lets Redis delete job records
  persistence  AOF off loses acknowledged jobs on a restart; appendfsync no loses up to ~30 s
               on an OS crash; an AOF write error means nothing is being persisted
  clock        this host's clock and Redis's disagree by more than a second
  transport    plain TCP to a host that is not this machine; TLS with verification turned off

The deployment comes from the URL and settings (topology.py). One server is checked as it
is. On a Cluster the server checks (version, eviction, persistence, replica role, clock) run
on every primary: a finding all of them share is reported once, "on every primary"; one
that only some have names them ("eviction on 127.0.0.1:7001: ..."). Behind Sentinel they
run on the primary Sentinel names now, and name it. The transport is judged per host: every
host in the URL and every node discovered (the Cluster's nodes, Sentinel's primary).

A check that passes says so ("ok"), so the output shows what was checked. `doctor` exits 1
when it finds an error (with --strict, a warning too).

CONFIG and INFO may be refused (a least-privilege ACL user, managed Redis): the checks that
need them are then reported as skipped, never as a crash.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import anyio

from . import topology
from .admin import Refused, ServerProbe
from .errors import EngineError
from .keys import FORMAT_VERSION, format_key
from .schedule_store import ScheduleRow
from .versioning import UNREADABLE

if TYPE_CHECKING:
    from .engine import RedisEngine

log = logging.getLogger(__name__)

Severity = Literal["ok", "info", "warning", "error"]  # ok: a check passed

CLOCK_TOLERANCE_S = 1.0
CLOCK_SAMPLES = 3
START_CHECK_TIMEOUT_S = 5.0
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2, "ok": 3}
_CONFIG_NAMES = ("maxmemory-policy", "appendonly", "appendfsync", "save")
_LOG_LEVEL = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "ok": logging.INFO}


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str
    node: str | None = None  # where, on a Cluster or behind Sentinel: "127.0.0.1:7001", "every primary"

    @property
    def is_problem(self) -> bool:
        """A warning or an error (what `doctor --strict` fails on)."""
        return self.severity in ("warning", "error")

    def __str__(self) -> str:
        return f"{self.severity.upper():<7} {self.describe()}"

    def describe(self) -> str:
        """The finding without its severity, for a log line whose level says it."""
        where = f" on {self.node}" if self.node else ""
        return f"{self.code}{where}: {self.message}"


async def diagnose(engine: RedisEngine, *, local_clock: Callable[[], float] = time.time) -> list[Finding]:
    """Check the deployment `engine` is connected to; errors first, then warnings, notes and passes.

    `local_clock` is this host's wall clock in seconds (tests pass a fake one). Raises
    EngineUnavailable when Redis (a Cluster primary, or Sentinel) cannot be reached at all.
    """
    topo = topology.of(engine.settings)
    if topo.kind == "cluster":
        findings = await _diagnose_cluster(engine, topo, local_clock)
    elif topo.kind == "sentinel":
        findings = await _diagnose_sentinel(engine, topo, local_clock)
    else:
        findings = check_transport(engine.settings.url)
        findings += (await _check_server(engine.server(), local_clock, cluster=False))[0]
    findings += await check_format(engine)
    findings += await check_schedules(engine)
    return sorted(findings, key=lambda f: _SEVERITY_ORDER[f.severity])


# A scheduler calls at least once a minute (scheduler.py): silence for this long means none runs.
SCHEDULER_SILENT_MS = 180_000


async def check_schedules(engine: RedisEngine) -> list[Finding]:
    """Schedules declared in Redis that no worker fires: no scheduler seen lately, or ticks overdue."""
    try:
        rows = await engine.schedule_rows(await engine.known_queues())
        now = await engine.redis_time_ms(max_age_ms=0)
    except EngineError:
        return []  # the server checks say why
    return schedule_findings(rows, now)


def schedule_findings(rows: Sequence[ScheduleRow], now_ms: int) -> list[Finding]:
    findings: list[Finding] = []
    for queue in sorted({row.queue for row in rows}):
        mine = [row for row in rows if row.queue == queue]
        seen = mine[0].seen_ms
        if seen is None or now_ms - seen > SCHEDULER_SILENT_MS:
            when = "never" if seen is None else f"last {(now_ms - seen) // 1000} s ago"
            findings.append(
                Finding(
                    "warning",
                    "scheduler",
                    f"queue {queue} has {_count(len(mine), 'schedule', 'schedules')} but no worker fires "
                    f"them (scheduler seen {when}): start a worker that imports their Job classes and "
                    "serves the queue, without --no-schedules",
                )
            )
            continue
        for row in mine:
            every = int(row.definition.get("every_ms") or 0)
            if row.next_tick_ms is not None and now_ms - row.next_tick_ms > max(
                SCHEDULER_SILENT_MS, 2 * every
            ):
                findings.append(
                    Finding(
                        "warning",
                        "scheduler",
                        f"schedule {row.id} in queue {queue} is overdue by "
                        f"{(now_ms - row.next_tick_ms) // 1000} s: "
                        "the workers that fire this queue's schedules do not import its Job class "
                        f"(gone from the code? aiojobs-redis schedules remove {row.id} --queue {queue})",
                    )
                )
    if rows and not findings:
        findings.append(
            Finding("ok", "scheduler", f"{_count(len(rows), 'schedule', 'schedules')} fired on time")
        )
    return findings


async def check_format(engine: RedisEngine) -> list[Finding]:
    """The data format version recorded under the engine's prefix (versioning.py), and live
    workers that write an older one.
    """
    return await _stored_format(engine) + await _older_workers(engine)


async def _older_workers(engine: RedisEngine) -> list[Finding]:
    """Live workers whose heartbeat gives an older data format, or none (0.1's)."""
    try:
        workers = await engine.alive_workers(await engine.redis_time_ms(max_age_ms=0))
    except EngineError:
        return []  # the worker checks say why
    older = [w for w in workers if w.format_version is None or w.format_version < FORMAT_VERSION]
    if not older:
        return []
    named = ", ".join(
        f"{w.id} ({'0.1' if w.format_version is None else f'version {w.format_version}'})" for w in older
    )
    return [
        Finding(
            "warning",
            "format-workers",
            f"{len(older)} live worker(s) write an older data format than this release's "
            f"{FORMAT_VERSION}: {named}. Stop them before any process of this release dispatches "
            "under this prefix: a 0.1 worker sets its records aside as bad records",
        )
    ]


async def _stored_format(engine: RedisEngine) -> list[Finding]:
    prefix, key = engine.settings.prefix, format_key(engine.settings.prefix)
    try:
        version = await engine.format_version()
    except EngineError as exc:
        return [Finding("info", "format-refused", f"the format version in {key} could not be read ({exc})")]
    if version is None:
        return [
            Finding(
                "info",
                "format",
                f"no data format version recorded under prefix {prefix!r}: nothing written there "
                f"since 0.1 (version 1), or nothing yet; this release writes version {FORMAT_VERSION}",
            )
        ]
    if version == UNREADABLE:
        return [
            Finding(
                "error",
                "format",
                f"{key} holds no data format version: workers of this release claim nothing "
                "under this prefix; delete the key (it is written again) if nothing newer wrote it",
            )
        ]
    if version > FORMAT_VERSION:
        return [
            Finding(
                "error",
                "format",
                f"data format version {version} under prefix {prefix!r}, newer than this release "
                f"reads ({FORMAT_VERSION}): its workers leave those jobs alone and claim nothing; "
                "upgrade them",
            )
        ]
    return [
        Finding(
            "info",
            "format",
            f"data format version {version} under prefix {prefix!r} (this release reads up to "
            f"{FORMAT_VERSION})",
        )
    ]


async def _diagnose_cluster(
    engine: RedisEngine, topo: topology.Topology, local_clock: Callable[[], float]
) -> list[Finding]:
    """The server checks on every primary at once, merged (merge_node_findings)."""
    primaries = await engine.cluster_primaries()
    replicas = await _cluster_replicas(primaries[0])
    hosts = [node.host for node in primaries] + [address.rpartition(":")[0] for address in replicas or []]
    findings = check_transport(engine.settings.url, topo, discovered=hosts)
    replica_count = (
        "replicas unknown (CLUSTER NODES refused)"
        if replicas is None
        else _count(len(replicas), "replica", "replicas")
    )
    findings.append(
        Finding(
            "info",
            "cluster",
            f"Redis Cluster: {_count(len(primaries), 'primary', 'primaries')} "
            f"({', '.join(n.name for n in primaries)}), {replica_count}; each of the engine's "
            "scripts runs on one node (a queue's keys share its hash tag, so a queue lives on one "
            "primary); the server checks ran on every primary",
        )
    )
    per_node: dict[str, list[Finding]] = {}

    async def check(node: ServerProbe) -> None:
        per_node[node.name] = (await _check_server(node, local_clock, cluster=True))[0]

    async with anyio.create_task_group() as tg:
        for node in primaries:
            tg.start_soon(check, node)
    return findings + merge_node_findings({n.name: per_node[n.name] for n in primaries})


async def _diagnose_sentinel(
    engine: RedisEngine, topo: topology.Topology, local_clock: Callable[[], float]
) -> list[Finding]:
    """The server checks on the primary Sentinel names now, named in every finding."""
    host, port = await engine.sentinel_primary()
    address = f"{host}:{port}"
    findings = check_transport(engine.settings.url, topo, discovered=[host])
    server_findings, info = await _check_server(engine.server(), local_clock, cluster=False)
    replicas = "replicas unknown (INFO refused)"
    if info is not None:
        replicas = _count(int(info.get("connected_slaves", 0)), "replica", "replicas") + " connected"
    findings.append(
        Finding(
            "info",
            "sentinel",
            f"Sentinel ({_count(len(topo.nodes), 'sentinel', 'sentinels')} in the URL) names "
            f"{address} as the primary of {topo.service}, with {replicas}; the server checks ran there",
        )
    )
    return findings + [replace(f, node=address) for f in server_findings]


async def _cluster_replicas(node: ServerProbe) -> list[str] | None:
    """The addresses of the Cluster's replicas not marked failed, as `node` sees them.

    (redis-py's slot map lists replicas only when it reads from them.) None when refused.
    """
    try:
        return await node.replicas()
    except Refused:
        return None


def merge_node_findings(per_node: Mapping[str, Sequence[Finding]]) -> list[Finding]:
    """One finding per distinct (severity, code, message), naming the nodes that have it.

    A finding every node has is named "every primary" (or the node, when there is one).
    """
    nodes_of: dict[Finding, list[str]] = {}
    for name, findings in per_node.items():
        for finding in findings:
            nodes_of.setdefault(replace(finding, node=None), []).append(name)
    merged = []
    for finding, names in nodes_of.items():
        everywhere = len(names) == len(per_node) and len(names) > 1
        merged.append(replace(finding, node="every primary" if everywhere else ", ".join(names)))
    return merged


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding, e.g. ``ERROR   eviction: maxmemory-policy is allkeys-lru: ...``."""
    lines = [str(f) for f in findings]
    return "\n".join(lines) if lines else "no findings"


def exit_code(findings: Iterable[Finding], *, strict: bool) -> int:
    """1 when an error was found, or in strict mode a warning too; else 0."""
    failing = ("error", "warning") if strict else ("error",)
    return 1 if any(f.severity in failing for f in findings) else 0


async def check_on_start(engine: RedisEngine) -> None:
    """Log the findings for a starting worker, each once at its own level (ok and notes at INFO).

    Never raises (except cancellation): a check that cannot run is logged and skipped.
    """
    try:
        with anyio.fail_after(START_CHECK_TIMEOUT_S):
            findings = await diagnose(engine)
    except (EngineError, TimeoutError) as exc:
        log.warning("deployment checks skipped: %s", exc)
        return
    for finding in findings:
        log.log(_LOG_LEVEL[finding.severity], "%s", finding.describe())


# -- checks on data already read (no I/O) ----------------------------------------------------


def check_transport(
    url: str, topo: topology.Topology | None = None, *, discovered: Iterable[str] = ()
) -> list[Finding]:
    """Plain TCP beyond this machine, or TLS whose verification was turned off.

    `topo` is the deployment (default: what the URL alone says); `discovered` are the hosts
    found at run time (the Cluster's nodes, Sentinel's primary), judged with the URL's.
    """
    topo = topo or topology.parse(url)
    if topo.kind != "single":
        return _check_multi_transport(url, topo, discovered)
    parts = urlsplit(url)
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
    host = parts.hostname or ""
    if parts.scheme == "unix":
        return [Finding("info", "transport", "Unix socket: the connection stays on this machine")]
    if parts.scheme != "rediss":
        if topology.is_loopback(host):
            return [Finding("info", "transport", f"plain TCP to {host} (this machine)")]
        return [
            Finding(
                "warning",
                "transport",
                f"plain TCP to {host}: the password and every payload cross the network "
                "unencrypted; use a rediss:// URL (TLS)",
            )
        ]
    problems = []
    if query.get("ssl_cert_reqs") in ("none", "optional", "cert_none", "cert_optional"):
        problems.append(
            Finding(
                "warning",
                "transport",
                f"TLS certificate verification is off (ssl_cert_reqs={query['ssl_cert_reqs']}): "
                "anyone on the path can pose as Redis; remove it and give the CA with "
                "ssl_ca_certs=/path/to/ca.pem",
            )
        )
    if query.get("ssl_check_hostname") in ("false", "0", "no", "n", "off"):
        problems.append(
            Finding(
                "warning",
                "transport",
                "TLS host name checking is off (ssl_check_hostname=false): any certificate the CA "
                "signed is accepted for this host; remove the option",
            )
        )
    return problems or [Finding("info", "transport", f"TLS to {host} with certificate verification")]


def _check_multi_transport(url: str, topo: topology.Topology, discovered: Iterable[str]) -> list[Finding]:
    """A Cluster's or Sentinel's hosts: every one plain or every one TLS, as the scheme says."""
    hosts = list(dict.fromkeys([host for host, _ in topo.nodes] + list(discovered)))
    what = "the Cluster nodes" if topo.kind == "cluster" else "the sentinels and the primary"
    listed = ", ".join(hosts)
    if topo.tls:
        # Cluster and Sentinel URLs take no TLS options: verification is always on.
        return [Finding("info", "transport", f"TLS to {what} at {listed} with certificate verification")]
    remote = [host for host in hosts if not topology.is_loopback(host)]
    if not remote:
        return [Finding("info", "transport", f"plain TCP to {what} at {listed} (this machine)")]
    tls_url = "rediss://" if url.startswith("redis://") else f"rediss+{topo.kind}://"
    return [
        Finding(
            "warning",
            "transport",
            f"plain TCP to {what}, {', '.join(remote)} not this machine: the password and every "
            f"payload cross the network unencrypted; use a {tls_url} URL (TLS)",
        )
    ]


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def check_server(info: Mapping[str, Any], *, cluster: bool = False) -> list[Finding]:
    """Version, Cluster mode and replica role, from INFO.

    `cluster` says the engine speaks to it as a Cluster node (a redis+cluster:// URL).
    """
    findings = []
    raw_version = str(info.get("redis_version", "?"))
    version = parse_version(raw_version)
    product = f"Valkey {info['valkey_version']}" if "valkey_version" in info else f"Redis {raw_version}"
    if version < (6, 0):
        findings.append(
            Finding(
                "error",
                "version",
                f"{product} is too old: the engine needs Redis 6.0 or later (fractional BLPOP "
                "timeouts, scripts that read TIME before writing); upgrade to Redis 6.2 or later",
            )
        )
    elif version < (6, 2):
        findings.append(
            Finding(
                "warning",
                "version",
                f"{product} is past its end of life and untested with this engine; upgrade to "
                "Redis 6.2 or later",
            )
        )
    else:
        findings.append(Finding("info", "version", f"{product}"))
    if str(info.get("cluster_enabled", "0")) == "1" and not cluster:
        findings.append(
            Finding(
                "error",
                "cluster",
                "this server is a Redis Cluster node, but the URL names a single server: the engine "
                "would get MOVED errors for queues on other nodes; use a redis+cluster://host:port "
                "URL (or the cluster=True setting)",
            )
        )
    if str(info.get("role", "master")) != "master":
        findings.append(
            Finding(
                "error",
                "replica",
                f"connected to a replica (role {info.get('role')}): jobs cannot be written here; "
                "point the URL at the primary",
            )
        )
    return findings


def check_eviction(config: Mapping[str, str] | None, info: Mapping[str, Any] | None) -> list[Finding]:
    policy = (config or {}).get("maxmemory-policy") or (info or {}).get("maxmemory_policy")
    if policy is None:
        return [Finding("info", "eviction", "maxmemory-policy could not be read; it must be noeviction")]
    policy = str(policy)
    fix = "set maxmemory-policy noeviction (CONFIG SET and redis.conf)"
    if policy == "noeviction":
        return [Finding("ok", "eviction", "maxmemory-policy noeviction")]
    if policy.startswith("volatile-"):
        return [
            Finding(
                "warning",
                "eviction",
                f"maxmemory-policy is {policy}: under memory pressure Redis deletes keys with a TTL, "
                f"among them failed job records and the markers that stop a replayed dispatch; {fix}",
            )
        ]
    return [
        Finding(
            "error",
            "eviction",
            f"maxmemory-policy is {policy}: under memory pressure Redis silently deletes job "
            f"records, so acknowledged jobs are lost; {fix}",
        )
    ]


def check_persistence(config: Mapping[str, str] | None, info: Mapping[str, Any] | None) -> list[Finding]:
    config, info = config or {}, info or {}
    findings = []
    appendonly = config.get("appendonly")
    if appendonly is None and "aof_enabled" in info:
        appendonly = "yes" if str(info["aof_enabled"]) == "1" else "no"
    if appendonly is None:
        findings.append(
            Finding("info", "persistence", "appendonly could not be read; it should be yes (AOF)")
        )
    elif appendonly != "yes":
        lost = (
            "AOF is off (appendonly no) and so are RDB snapshots (save ''): a Redis restart loses every job"
            if config.get("save") == ""
            else "AOF is off (appendonly no): a Redis restart loses every job written since the last snapshot"
        )
        findings.append(
            Finding(
                "error",
                "persistence",
                f"{lost}, acknowledged ones included; set appendonly yes and appendfsync everysec "
                "(or always)",
            )
        )
    else:
        fsync = config.get("appendfsync")
        if fsync == "no":
            findings.append(
                Finding(
                    "warning",
                    "persistence",
                    "appendfsync no: the OS decides when the AOF reaches the disk, so an OS crash or "
                    "power loss can lose about 30 s of acknowledged jobs; set appendfsync everysec "
                    "(about 1 s) or always (none)",
                )
            )
        elif fsync is None:
            findings.append(
                Finding(
                    "info", "persistence", "AOF is on; appendfsync could not be read (everysec or always)"
                )
            )
    if str(info.get("aof_last_write_status", "ok")) != "ok":
        findings.append(
            Finding(
                "error",
                "persistence",
                "Redis's last AOF write failed (aof_last_write_status "
                f"{info['aof_last_write_status']}): writes are not persisted; check the disk",
            )
        )
    elif appendonly == "yes" and config.get("appendfsync") in ("everysec", "always"):
        findings.append(Finding("ok", "persistence", f"AOF is on, appendfsync {config['appendfsync']}"))
    return findings


def check_clock(redis_s: float, local_s: float, uncertainty_s: float) -> list[Finding]:
    """Compare Redis's TIME with this host's clock at the same moment, give or take `uncertainty_s`."""
    skew = local_s - redis_s
    if abs(skew) - uncertainty_s <= CLOCK_TOLERANCE_S:
        return [Finding("ok", "clock", f"this host's clock and Redis's agree within {CLOCK_TOLERANCE_S:g} s")]
    direction = "ahead of" if skew > 0 else "behind"
    return [
        Finding(
            "warning",
            "clock",
            f"this host's clock is {abs(skew):.1f} s {direction} Redis's (±{uncertainty_s:.3f} s): "
            "leases and delays use Redis's clock, so jobs stay correct, but one of the two clocks is "
            "wrong (a jump in Redis's starts delayed jobs early or reclaims running ones) and "
            "timestamps in logs disagree; synchronise both hosts with NTP",
        )
    ]


# -- I/O -------------------------------------------------------------------------------------


async def _check_server(
    server: ServerProbe, local_clock: Callable[[], float], *, cluster: bool
) -> tuple[list[Finding], dict[str, Any] | None]:
    """Version, role, eviction, persistence and clock of one server; and its INFO, if allowed."""
    findings: list[Finding] = []
    info, info_refusal = await _read_info(server)
    config, config_refusal = await _read_config(server)
    if info is None:
        findings.append(
            Finding(
                "info",
                "info-refused",
                f"INFO was refused ({info_refusal}): the version, Cluster and replica checks "
                "were skipped; run the doctor as a user allowed INFO",
            )
        )
    else:
        findings += check_server(info, cluster=cluster)
    if config_refusal is not None:
        findings.append(
            Finding(
                "info",
                "config-refused",
                f"CONFIG GET was refused ({config_refusal}); eviction and persistence were judged "
                "from INFO where it allows (appendfsync cannot be read from INFO)",
            )
        )
    findings += check_eviction(config, info)
    findings += check_persistence(config, info)
    findings += await _check_clock(server, local_clock)
    return findings, info


async def _read_info(server: ServerProbe) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return await server.info(), None
    except Refused as exc:  # NOPERM under an ACL, or a renamed command
        return None, str(exc)


async def _read_config(server: ServerProbe) -> tuple[dict[str, str] | None, str | None]:
    """CONFIG GET of what matters."""
    try:
        return await server.config(_CONFIG_NAMES), None
    except Refused as exc:
        return None, str(exc)


async def _check_clock(server: ServerProbe, local_clock: Callable[[], float]) -> list[Finding]:
    """Redis TIME against `local_clock`, from the sample with the shortest round trip."""
    best: tuple[float, float, float] | None = None  # (round trip, redis s, local s mid-trip)
    for _ in range(CLOCK_SAMPLES):
        local_before = local_clock()
        started = time.monotonic()
        try:
            seconds, micros = await server.time()
        except Refused as exc:
            return [Finding("info", "clock", f"TIME was refused ({exc})")]
        trip = time.monotonic() - started
        if best is None or trip < best[0]:
            best = (trip, seconds + micros / 1e6, local_before + trip / 2)
    assert best is not None
    trip, redis_s, local_s = best
    return check_clock(redis_s, local_s, trip / 2)
