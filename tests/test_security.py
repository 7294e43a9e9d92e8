"""Nothing leaked by the filesystem or the network: quoted SQL, owner-only files, loopback DDP."""

from __future__ import annotations

import stat
from pathlib import Path

import dagster as dg
import duckdb

from synehrgy_assets.resources import MlflowResource, WorkspaceResource, owner_only_tree, sql_literal


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_quote_in_the_home_path_is_a_path_not_sql(tmp_path):
    """meds_export sets DuckDB's temp_directory from the home path: a quote in it is quoted, and a
    crafted path cannot append a statement."""
    from synehrgy_assets.defs.meds import meds_export
    from tests.helpers.meds_marts import build_marts

    home = tmp_path / "o'brien's home'; drop table main.visits; --"
    workspace = WorkspaceResource(home=str(home))
    workspace.ensure()
    build_marts(workspace.layout.duckdb)
    result = dg.materialize([meds_export], resources={"workspace": workspace},
                            run_config={"ops": {"meds_export": {"config": {"shard_rows": 10}}}})
    assert result.success
    with duckdb.connect(str(workspace.layout.duckdb), read_only=True) as con:
        assert con.execute("select count(*) from main.visits").fetchall()[0][0] > 0
    assert sql_literal("a'b") == "'a''b'"
    with workspace.connect(read_only=True) as con:
        assert con.execute("select current_setting('memory_limit')").fetchall()[0][0]


def test_the_workspace_files_holding_real_rows_are_owner_only(tmp_path):
    home = tmp_path / "new_home"
    workspace = WorkspaceResource(home=str(home))
    with workspace.connect() as con:
        con.execute("create table t as select 1 as x")
    assert _mode(home) == 0o700
    assert _mode(workspace.layout.private) == 0o700
    assert _mode(workspace.layout.duckdb) == 0o600

    ml = MlflowResource(home=str(home))
    ml.setup()
    ml.client().search_experiments()
    assert _mode(home / "mlflow.db") == 0o600
    assert _mode(home / "mlartifacts") == 0o700

    tokens = workspace.layout.private / "tokens" / "train" / "windows"
    tokens.mkdir(parents=True)
    (tokens / "tokens.npy").write_bytes(b"x")
    owner_only_tree(workspace.layout.private / "tokens")
    assert _mode(tokens) == 0o700 and _mode(tokens / "tokens.npy") == 0o600


def test_a_published_build_is_owner_only(tmp_path):
    from tests.helpers.staged_builds import run_checks, stage_by_hand

    home = (tmp_path / "home").resolve()
    stage_by_hand(home, 5)
    assert run_checks(home).success
    assert _mode(home / "warehouse.duckdb") == 0o600
    assert _mode(home / "staging_state.json") == 0o600


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(addr)
    return found


def test_the_ddp_rendezvous_listens_on_loopback_only():
    from synehrgy_assets.core.ddp_entry import loopback_env, loopback_store

    store, port = loopback_store()
    assert _listening(port) == ["0100007F"]  # 127.0.0.1, no wildcard socket
    store.set("k", "v")
    del store
    env = loopback_env({}, 1, 2, port)
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == str(port)
    assert env["TORCHELASTIC_USE_AGENT_STORE"] == "True"  # every rank a client of the loopback store
    assert env["GLOO_SOCKET_IFNAME"] in ("lo", "lo0") and env["RANK"] == "1" and env["WORLD_SIZE"] == "2"
    assert loopback_env({"GLOO_SOCKET_IFNAME": "eth1"}, 0, 2, port)["GLOO_SOCKET_IFNAME"] == "eth1"  # configured


def test_torch_standalone_store_would_listen_everywhere():
    """Why the launcher binds the socket itself: torch's own TCPStore server takes every interface."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    try:
        assert set(_listening(store.port)) - {"0100007F"}, _listening(store.port)
    finally:
        del store
