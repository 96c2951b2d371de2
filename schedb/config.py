"""Node configuration: one TOML file per node, overridable by SCHEDB_* variables.

Every setting lives in a section dataclass below with its default; the file
may set any of them, and `SCHEDB_<SECTION>_<KEY>` (e.g.
`SCHEDB_SCHEDULER_LOOKAHEAD_S=8`) overrides the file. Loading validates
everything up front and names the key at fault, so a node never starts
half-configured.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedb.fsm.limits import Quotas
from schedb.origins import parse_origin

WORKERS_MAX = 64  # delivery worker processes per node, at most


class ConfigError(ValueError):
    """The configuration is unusable; the message names the key."""


@dataclass(frozen=True)
class NodeSection:
    id: str = ""
    data_dir: str = ""


@dataclass(frozen=True)
class HttpSection:
    listen: str = "127.0.0.1:8001"
    body_max_bytes: int = 1_048_576
    pending_commands_max: int = 1_000
    commit_timeout_s: float = 5.0
    # Requests with more header fields than this are refused (413) before any handler runs.
    headers_max: int = 64
    # TLS for the API: both files (PEM) set, or neither (plain HTTP).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # What nodes trust when they call each other's API over TLS (forwarded membership
    # changes, drains); empty: the system's CAs. A self-signed cert can be its own CA.
    tls_ca_file: str = ""
    # Origins ("https://sched-1.example:8001") of the web console besides the members' own API
    # addresses, which are always allowed: needed when nodes listen on 0.0.0.0 and operators
    # open the console by a name the cluster does not know. See schedb/api/cors.py.
    cors_origins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RaftSection:
    listen: str = "127.0.0.1:9001"
    peers: list[str] = field(default_factory=list)
    # A node joining a running cluster (`schedb cluster add`) stands for no election
    # before a leader has contacted it; see schedb.raft_node.RaftNode.
    join: bool = False
    # Encrypts and authenticates Raft traffic (the same on every node). pysyncobj decodes what
    # arrives on the Raft port with pickle, so without it whoever reaches the port runs code on
    # the node: required unless raft.listen is a loopback address (_check_raft_password).
    password: str = ""
    election_min_s: float = 0.4
    election_max_s: float = 1.2
    heartbeat_s: float = 0.1
    connection_retry_s: float = 1.0
    leader_fallback_s: float = 3.0
    compaction_min_entries: int = 20_000
    compaction_min_s: float = 60.0


@dataclass(frozen=True)
class SchedulerSection:
    lookahead_s: float = 5.0
    dispatch_interval_s: float = 0.1
    follower_alive_s: float = 1.5
    fence_s: float = 3.0
    reassign_after_s: float = 5.0
    history_per_job: int = 100
    recent_executions: int = 10_000
    misfire_grace_s: float = 10.0
    catch_up_window_s: float = 3600.0
    idempotency_ttl_s: float = 86_400.0
    slot_jobs_max: int = 20_000


@dataclass(frozen=True)
class ExecutorSection:
    max_inflight: int = 512
    outcome_batch_s: float = 0.02
    outcome_batch_max: int = 2_000
    timeout_s_max: float = 300.0
    # Delivery worker processes (schedb/worker_pool.py): 0 and 0, the node's own loop calls the
    # webhooks. Otherwise between workers_min and workers_max processes do, their number following
    # the load (schedb/scaling.py): pressure (any of the scale_up_* levels) held for scale_up_after_s
    # adds one, calm (every level below a third of it) held for scale_down_after_s retires one, and
    # two changes are at least scale_interval_s apart.
    workers_min: int = 0
    workers_max: int = 0
    scale_up_inflight: int = 64  # calls in flight per worker
    scale_up_cpu: float = 0.7  # a worker's busy share of one core
    scale_up_lag_ms: int = 100  # from hand-over to the call's start, on average
    scale_up_after_s: float = 3.0
    scale_down_after_s: float = 30.0
    scale_interval_s: float = 10.0


@dataclass(frozen=True)
class AuthSection:
    # Off: every request acts as an admin of team "default" (the local dev cluster).
    enabled: bool = False
    # A key that is an admin of `admin_team` without being in the replicated state: the
    # way to create the first keys. Set it by SCHEDB_AUTH_ADMIN_KEY rather than in the file.
    admin_key: str = ""
    admin_team: str = "ops"


@dataclass(frozen=True)
class QuotasSection(Quotas):
    """Every team's limits unless an admin sets others at runtime (PUT /api/v1/teams/{team}/quotas).
    The fields and defaults are the state machine's (schedb.fsm.limits.Quotas): the leader proposes
    these values through the log (SetDefaultQuotas), and a state that has not had them yet uses
    the same defaults."""


@dataclass(frozen=True)
class SecretsSection:
    # The AES-256-GCM key that encrypts secrets (32 bytes, base64), the same on every node:
    # from SCHEDB_SECRETS_KEY, or from this file. Neither: the secrets API is off.
    key_file: str = ""
    key: str = ""


@dataclass(frozen=True)
class EgressSection:
    """Where webhooks may go. Link-local (cloud metadata), multicast and the cluster's own
    ports are always refused; private ranges and loopback only when allowed here."""

    allow_private: bool = False
    allow_loopback: bool = False


@dataclass(frozen=True)
class ClockSection:
    # A node whose clock is off the leader's by more than this stops executing and says so on
    # /ready (schedb/clockwatch.py); a leader off a majority's stops assigning (as CockroachDB
    # bounds clock offsets, 500 ms by default).
    max_offset_ms: int = 500
    # How often each node measures the others' clocks over their HTTP API.
    probe_interval_s: float = 1.0


@dataclass(frozen=True)
class BreakerSection:
    """A circuit per team and webhook target on each node (schedb/breaker.py): it opens after `failures`
    in a row, or when at least `failure_rate` of the last `window_s` seconds' calls failed (once
    there were `window_calls_min`), and lets one probe through after `cooldown_s`."""

    enabled: bool = True
    failures: int = 5
    failure_rate: float = 0.5
    window_s: float = 30.0
    window_calls_min: int = 20
    window_calls_max: int = 200
    cooldown_s: float = 30.0


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "auto"  # auto | json | console


@dataclass(frozen=True)
class Config:
    node: NodeSection
    http: HttpSection
    raft: RaftSection
    scheduler: SchedulerSection
    executor: ExecutorSection
    log: LogSection
    auth: AuthSection = field(default_factory=AuthSection)
    quotas: QuotasSection = field(default_factory=QuotasSection)
    secrets: SecretsSection = field(default_factory=SecretsSection)
    egress: EgressSection = field(default_factory=EgressSection)
    clock: ClockSection = field(default_factory=ClockSection)
    breaker: BreakerSection = field(default_factory=BreakerSection)

    @property
    def data_path(self) -> Path:
        return Path(self.node.data_dir)


_SECTION_TYPES = {"node": NodeSection, "http": HttpSection, "raft": RaftSection,
                  "scheduler": SchedulerSection, "executor": ExecutorSection, "log": LogSection,
                  "auth": AuthSection, "quotas": QuotasSection, "secrets": SecretsSection, "egress": EgressSection,
                  "clock": ClockSection, "breaker": BreakerSection}


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return config_from(raw, env)


def config_from(raw: dict[str, Any], env: dict[str, str]) -> Config:
    """A config from its tables (a parsed file; the simulator's own), checked as a file's is."""
    for name in raw:
        if name not in _SECTION_TYPES:
            raise ConfigError(f"unknown section [{name}]; known: {', '.join(_SECTION_TYPES)}")
    sections = {name: _load_section(name, cls, raw.get(name, {}), env) for name, cls in _SECTION_TYPES.items()}
    config = Config(**sections)
    _check(config)
    return config


def _load_section(name: str, cls: type, raw: Any, env: dict[str, str]) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key}; known: {', '.join(known)}")
    values: dict[str, Any] = {}
    for key, fld in known.items():
        env_key = f"SCHEDB_{name.upper()}_{key.upper()}"
        if env_key in env:
            values[key] = _from_env(env_key, env[env_key], fld.type)
        elif key in raw:
            values[key] = _typed(f"{name}.{key}", raw[key], fld.type)
    return cls(**values)


def _from_env(env_key: str, text: str, type_name: Any) -> Any:
    if type_name == "list[str]":
        try:
            value = json.loads(text) if text.strip().startswith("[") else [p for p in text.split(",") if p]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{env_key} must be a JSON list or comma-separated") from exc
        return _typed(env_key, value, type_name)
    if type_name == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{env_key} must be true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if type_name in ("int", "float"):
        try:
            return _typed(env_key, float(text) if type_name == "float" else int(text), type_name)
        except ValueError as exc:
            raise ConfigError(f"{env_key} must be a number, got {text!r}") from exc
    return text


def _typed(key: str, value: Any, type_name: Any) -> Any:
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[type_name]
    if not ok:
        raise ConfigError(f"{key} must be of type {type_name}, got {value!r}")
    return float(value) if type_name == "float" else value


def parse_address(key: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} must be host:port, got {text!r}")
    return host, int(port)


def _check(config: Config) -> None:
    if not config.node.id:
        raise ConfigError("node.id is required")
    if not config.node.data_dir:
        raise ConfigError("node.data_dir is required")
    parent = config.data_path.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"node.data_dir: parent directory {parent} does not exist")
    parse_address("http.listen", config.http.listen)
    _check_raft_password(config.raft)
    for peer in config.raft.peers:
        parse_address("raft.peers", peer)
    if config.raft.listen in config.raft.peers:
        raise ConfigError("raft.peers must not contain this node's own raft.listen")
    for origin in config.http.cors_origins:
        if parse_origin(origin) is None:
            raise ConfigError(f"http.cors_origins: {origin!r} is not an origin such as https://host:8001")
    _positive(config)
    r, s = config.raft, config.scheduler
    if not r.election_min_s < r.election_max_s:
        raise ConfigError("raft.election_min_s must be below raft.election_max_s")
    if not s.fence_s > r.election_max_s:
        raise ConfigError("scheduler.fence_s must exceed raft.election_max_s")
    if not s.reassign_after_s > s.fence_s:
        raise ConfigError("scheduler.reassign_after_s must exceed scheduler.fence_s (no double delivery)")
    if not s.lookahead_s > r.election_max_s + 1.0:
        raise ConfigError("scheduler.lookahead_s must exceed raft.election_max_s + 1 s (time to elect and commit)")
    if bool(config.http.tls_cert_file) != bool(config.http.tls_key_file):
        raise ConfigError("http.tls_cert_file and http.tls_key_file must be set together")
    if config.auth.enabled and not config.auth.admin_team:
        raise ConfigError("auth.admin_team must not be empty")
    if not config.clock.max_offset_ms < 1000:  # schedb.fsm.occurrences.WITHDRAW_SLACK_MS covers the offset
        raise ConfigError("clock.max_offset_ms must be below 1000")
    e = config.executor
    if not 0 <= e.workers_min <= e.workers_max <= WORKERS_MAX:
        raise ConfigError(f"executor.workers_min and workers_max: 0 <= workers_min <= workers_max <= {WORKERS_MAX}")
    if e.workers_max and not e.workers_min:  # with none running, the load that would start one is not seen
        raise ConfigError("executor.workers_min must be at least 1 when workers_max is set (0 and 0: no workers)")
    if not config.breaker.failure_rate <= 1:
        raise ConfigError("breaker.failure_rate must be at most 1 (a share of the calls)")
    if not config.breaker.window_calls_min <= config.breaker.window_calls_max:
        raise ConfigError("breaker.window_calls_min must not exceed breaker.window_calls_max")
    if config.log.format not in ("auto", "json", "console"):
        raise ConfigError("log.format must be auto, json or console")
    if config.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level must be debug, info, warning or error")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: a port only this machine reaches. Other names are not
    resolved here: what they stand for can change after the check."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_raft_password(raft: RaftSection) -> None:
    host, _ = parse_address("raft.listen", raft.listen)
    if not raft.password and not _is_loopback(host):
        raise ConfigError(
            f"raft.password is required when raft.listen ({raft.listen}) is not a loopback address: the Raft "
            "port decodes what it receives with pickle, so without a password anyone who can reach it can run "
            "code on this node. Set raft.password (or SCHEDB_RAFT_PASSWORD), the same on every node.")


def _positive(config: Config) -> None:
    for section_name in ("http", "raft", "scheduler", "executor", "quotas", "clock", "breaker"):
        section = getattr(config, section_name)
        for fld in dataclasses.fields(section):
            value = getattr(section, fld.name)
            if fld.type in ("int", "float") and value <= 0 and not fld.name.startswith("workers_"):
                raise ConfigError(f"{section_name}.{fld.name} must be positive, got {value}")
