"""A whole federation on this machine (SuperLink + one SuperNode per hospital, TLS + SuperNode
authentication), for tests, benchmarks and development. Always cleaned up on exit."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fl_engine.deploy import control
from fl_engine.deploy.pki import Pki, ensure_dev_pki, ensure_node_keys
from fl_engine.deploy.processes import (
    ManagedProcess, SuperLinkHandle, SuperNodeHandle, start_superlink, start_supernode, start_zygote, wait_until,
)
from fl_engine.node.datasets import register_table

APP_DIR = Path(__file__).resolve().parents[1] / "federation" / "app"


@dataclass
class LocalFederation:
    """SuperLink + SuperNodes under `root`; use as a context manager."""

    root: Path
    launcher: str = "prefork"
    poll_interval_s: float | None = 0.1
    tuning: bool = False
    release_after_s: float | None = None  # prefork launcher: shed warm imports after this idle time
    superlink_poll_s: float | None = None  # the SuperLink's SuperExec poll (None: poll_interval_s)
    events_key_file: Path | None = None  # the portal's run-events key (portal tests)
    serverapp_launcher: str | None = None  # "prefork" / "flower" (None: FEDHAEM_SERVERAPP_PREFORK)
    # every node shares this box with the SuperLink: nodes run below its priority, so the hub keeps
    # answering (heartbeats, TLS handshakes, the ServerApp's task heartbeat) when all get work at once
    node_niceness: int = 5
    # one warm process forks every node's ClientApps (fl_engine.deploy.zygote): a run after an idle
    # spell does not pay one torch import per node on the box's cores (prefork launchers only)
    shared_warm: bool = False
    # with shared_warm: each SuperNode claims its tasks in a thread of its own, no launcher process
    # (one Flower-importing process per node instead of two: prefork.serve_in_supernode)
    claims_in_node: bool = False
    zygote: ManagedProcess | None = None
    zygote_socket: Path | None = None
    pki: Pki | None = None
    superlink: SuperLinkHandle | None = None
    nodes: dict[str, SuperNodeHandle] = field(default_factory=dict)
    node_ids: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> "LocalFederation":
        self.root = Path(self.root)
        self.pki = ensure_dev_pki(self.root / "pki")
        try:
            self.superlink = start_superlink(self.pki, self.root / "superlink",
                                             poll_interval_s=self.superlink_poll_s or self.poll_interval_s,
                                             tuning=self.tuning,
                                             events_key_file=self.events_key_file,
                                             serverapp_launcher=self.serverapp_launcher)
            if self.shared_warm and self.launcher == "prefork":
                self.zygote, self.zygote_socket = start_zygote(self.root / "zygote", tuning=self.tuning,
                                                               release_after_s=self.release_after_s)
        except Exception:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> str:
        return self.superlink.address

    def conn_kwargs(self) -> dict:
        """Keyword arguments of the control functions for this federation."""
        return {"root_certificates": self.pki.ca_cert, "flwr_home": self.root / "flwr-cli"}

    def add_node(self, name: str, table: pd.DataFrame | None = None, dataset: str = "study",
                 use_case: str = "MDS", node_options: dict | None = None) -> SuperNodeHandle:
        """Keys, registration, local registry (with `table` as `dataset`) and SuperNode process.
        Without `node_options` the node serves any run (trust-all-runs: engine tests only); pass
        {"manager": URL, "token-file": path} for a node that checks its approvals."""
        ndir = self.root / "nodes" / name
        keys = ensure_node_keys(ndir / "keys")
        self.node_ids[name] = control.register_node(keys.public_key, self.address, name=name,
                                                    **self.conn_kwargs())
        if table is not None:
            register_table(ndir / "data", dataset, table, use_case)
        h = start_supernode(name, self.address, self.pki.ca_cert, keys.private_key, ndir / "data",
                            ndir, launcher=self.launcher, poll_interval_s=self.poll_interval_s or 1.0,
                            tuning=self.tuning, node_options=node_options or {"trust-all-runs": "true"},
                            release_after_s=self.release_after_s, niceness=self.node_niceness,
                            zygote=self.zygote_socket,
                            claims_in_node=self.claims_in_node and self.zygote_socket is not None)
        self.nodes[name] = h
        return h

    def wait_nodes_online(self, timeout_s: float = 60) -> None:
        """Until every added node is online at the SuperLink."""
        want = set(self.node_ids.values())

        def online() -> bool:
            for h in self.nodes.values():
                for p in h.processes():
                    if not p.alive():
                        raise RuntimeError(f"{p.name} exited:\n{p.log_text()[-2000:]}")
            got = {n["node-id"] for n in control.list_nodes(self.address, **self.conn_kwargs())
                   if n.get("status") == "online"}
            return want <= got
        wait_until(online, timeout_s, "SuperNodes online")

    def wait_run(self, run_id: str, timeout_s: float = 300, poll_s: float = 1.0) -> dict:
        """Poll run_status until the run is finished; returns the last status."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = control.run_status(run_id, self.address, **self.conn_kwargs())
            if st["finished"]:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {st['status']} after {timeout_s:g} s")
            time.sleep(poll_s)

    def close(self) -> None:
        for h in self.nodes.values():
            h.stop()
        if self.zygote is not None:
            self.zygote.stop()
        if self.superlink is not None:
            self.superlink.stop()
