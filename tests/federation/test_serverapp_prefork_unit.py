"""The prefork ServerApp launcher's switch and PATH shim, without processes."""
import os
import subprocess

import pytest

from fl_engine.deploy import processes, serverapp_prefork


@pytest.mark.parametrize("raw, want", [("", "flower"), ("0", "flower"), ("1", "prefork")])
def test_the_environment_chooses_the_launcher(monkeypatch, raw, want):
    monkeypatch.setenv(processes.SERVERAPP_LAUNCHER_ENV, raw)
    assert processes.serverapp_launcher_default() == want


def test_a_malformed_switch_fails_loudly_naming_the_variable(monkeypatch):
    monkeypatch.setenv(processes.SERVERAPP_LAUNCHER_ENV, "yes")
    with pytest.raises(RuntimeError, match="FEDHAEM_SERVERAPP_PREFORK"):
        processes.serverapp_launcher_default()


def test_an_unknown_launcher_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="serverapp_launcher"):
        processes.start_superlink(None, tmp_path, serverapp_launcher="fast")


def test_the_shim_runs_the_launcher_module_with_the_superlinks_arguments(tmp_path):
    d = processes.serverapp_launcher_bin(tmp_path / "bin")
    shim = d / "flower-superexec"
    assert os.access(shim, os.X_OK)
    assert "-m fl_engine.deploy.serverapp_prefork" in shim.read_text()
    out = subprocess.run([str(shim), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--runtime-api-address" in out.stdout
    processes.serverapp_launcher_bin(tmp_path / "bin")  # idempotent
    assert shim.read_text().count("exec") == 1


def test_the_poll_follows_flowers_own_variable_and_bounds(monkeypatch):
    monkeypatch.setenv(serverapp_prefork.POLL_ENV, "0.5")
    assert serverapp_prefork._poll_s() == 0.5
    monkeypatch.setenv(serverapp_prefork.POLL_ENV, "0")
    with pytest.raises(SystemExit, match="FLWR_SUPEREXEC_TASK_POLL_INTERVAL"):
        serverapp_prefork._poll_s()


def test_the_launchers_shared_helpers_see_a_zombie_as_gone_and_reap_each_child_once(caplog):
    import logging
    import os
    import time

    from fl_engine.deploy import forking

    pid = os.fork()
    if pid == 0:
        os._exit(3)
    deadline = time.monotonic() + 10
    while forking.alive(pid) and time.monotonic() < deadline:  # dead, not reaped yet: a zombie
        time.sleep(0.01)
    assert not forking.alive(pid) and forking.alive(os.getpid())
    children = {pid}
    with caplog.at_level(logging.INFO):
        forking.reap(children, "ServerApp", logging.getLogger("t"))
        forking.reap(children, "ServerApp", logging.getLogger("t"))
    assert children == set()
    assert [r.getMessage() for r in caplog.records] == [f"ServerApp child {pid} exited with code 3"]
