from __future__ import annotations

from pathlib import Path

import pytest

from schedb.config import ConfigError, load_config

GOOD = """
[node]
id = "node1"
data_dir = "{data}"
[http]
listen = "127.0.0.1:8001"
[raft]
listen = "127.0.0.1:9001"
peers = ["127.0.0.1:9002", "127.0.0.1:9003"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text.replace("{data}", str(tmp_path / "data")))
    return path


def test_the_local_cluster_configs_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # data_dir is relative: .data/nodeN, whose parent make cluster creates
    with pytest.raises(ConfigError, match="parent directory"):
        load_config(root / "cluster-configs" / "node1.toml", {})
    (tmp_path / ".data").mkdir()
    for n in (1, 2, 3):
        config = load_config(root / "cluster-configs" / f"node{n}.toml", {})
        assert config.node.id == f"node{n}" and len(config.raft.peers) == 2
        assert config.scheduler.lookahead_s == 5.0


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"SCHEDB_SCHEDULER_LOOKAHEAD_S": "8", "SCHEDB_RAFT_PEERS": "127.0.0.1:9005,127.0.0.1:9006"}
    config = load_config(write(tmp_path, GOOD), env)
    assert config.scheduler.lookahead_s == 8.0 and config.raft.peers == ["127.0.0.1:9005", "127.0.0.1:9006"]


@pytest.mark.parametrize(("text", "message"), [
    (GOOD + "[http]\n", "not valid TOML"),
    (GOOD.replace('listen = "127.0.0.1:8001"', 'listen = "127.0.0.1:8001"\nlisten_port = 1'), "http.listen_port"),
    (GOOD + "[storage]\nx = 1\n", r"unknown section \[storage\]"),
    (GOOD.replace("127.0.0.1:8001", "localhost"), "http.listen must be host:port"),
    (GOOD.replace('"127.0.0.1:9002"', '"127.0.0.1:99999"'), "raft.peers must be host:port"),
    (GOOD.replace('"127.0.0.1:9002"', '"127.0.0.1:9001"'), "must not contain this node"),
    (GOOD.replace('id = "node1"', "id = 1"), "node.id must be of type str"),
    (GOOD.replace('data_dir = "{data}"', 'data_dir = "/nonexistent/dir/data"'), "parent directory"),
    (GOOD + "[scheduler]\nlookahead_s = 1.0\n", "lookahead_s must exceed"),
    (GOOD + "[scheduler]\nfence_s = -1\n", "fence_s must be positive"),
    (GOOD + "[log]\nformat = \"xml\"\n", "log.format"),
    (GOOD + "[executor]\nworkers_min = 3\nworkers_max = 2\n", "workers_min <= workers_max"),
    (GOOD + "[executor]\nworkers_min = -1\n", "0 <= workers_min"),
    (GOOD + "[executor]\nworkers_min = 1\nworkers_max = 65\n", "workers_max <= 64"),
    (GOOD + "[executor]\nworkers_max = 2\n", "workers_min must be at least 1 when workers_max is set"),
    (GOOD + "[executor]\nworkers_min = 1\nworkers_max = 1\nscale_interval_s = 0\n", "scale_interval_s must be pos"),
    (GOOD.replace('listen = "127.0.0.1:8001"', 'listen = "127.0.0.1:8001"\ncors_origins = ["sched-1:8001"]'),
     "http.cors_origins"),
])
def test_bad_configs_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), {})


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SCHEDB_HTTP_BODY_MAX_BYTES"):
        load_config(write(tmp_path, GOOD), {"SCHEDB_HTTP_BODY_MAX_BYTES": "lots"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", {})


def _raft_listen(address: str) -> str:
    return GOOD.replace('listen = "127.0.0.1:9001"', f'listen = "{address}"')


@pytest.mark.parametrize("address", ["0.0.0.0:9001", "10.0.0.5:9001", "[::]:9001", "[2001:db8::5]:9001",
                                     "sched-1.example:9001", "127.0.0.1.nip.io:9001"])
def test_a_raft_port_off_loopback_needs_a_password(tmp_path: Path, address: str) -> None:
    """pysyncobj unpickles what arrives on the Raft port: without a password, anyone reaching it runs code."""
    with pytest.raises(ConfigError, match=r"raft\.password is required when raft\.listen .* not a loopback"):
        load_config(write(tmp_path, _raft_listen(address)), {})
    with pytest.raises(ConfigError, match=r"raft\.password is required"):
        load_config(write(tmp_path, GOOD), {"SCHEDB_RAFT_LISTEN": address})
    config = load_config(write(tmp_path, _raft_listen(address)), {"SCHEDB_RAFT_PASSWORD": "a-shared-secret"})
    assert config.raft.listen == address and config.raft.password == "a-shared-secret"
    with_file = _raft_listen(address).replace("[raft]\n", '[raft]\npassword = "a-shared-secret"\n')
    assert load_config(write(tmp_path, with_file), {}).raft.password == "a-shared-secret"


@pytest.mark.parametrize("address", ["127.0.0.1:9001", "127.0.0.2:9001", "localhost:9001", "LOCALHOST:9001",
                                     "[::1]:9001", "::1:9001"])
def test_a_loopback_raft_port_needs_no_password(tmp_path: Path, address: str) -> None:
    assert load_config(write(tmp_path, _raft_listen(address)), {}).raft.password == ""
