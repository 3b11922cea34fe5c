"""The node-operator CLI and the announcement to the manager (a local HTTP server on
127.0.0.1 plays the manager's node API)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from etl.announce import AnnounceError, announce, validate_payload
from etl.cli import main
from etl.registry import DatasetRegistry

from .synth import canonical_cohort


class _Manager:
    def __init__(self, status=201):
        self.status = status
        self.requests = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if outer.status < 300 else b'{"detail": "nope"}')

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def workspace(tmp_path):
    canonical_cohort(n=20, seed=2).to_csv(tmp_path / "h.csv", index=False)
    (tmp_path / "token").write_text("s3cret-node-token\n")
    return tmp_path


def test_cli_etl_register_announce(workspace, capsys):
    w = workspace
    assert main(["etl", "--use-case", "mds", "--source", str(w / "h.csv"), "--out", str(w / "out")]) == 0
    assert "rows/s" in capsys.readouterr().out
    assert main(["report", str(w / "out")]) == 0
    assert "patients in table : 20" in capsys.readouterr().out
    with _Manager() as mgr:
        rc = main(["register", "--name", "local-mds", "--dataset", str(w / "out"), "--data-dir",
                   str(w / "node"), "--manager", mgr.url, "--token-file", str(w / "token")])
        assert rc == 0
    path, headers, body = mgr.requests[0]
    assert path == "/api/nodes/datasets/"
    assert headers["Authorization"] == "Token s3cret-node-token"
    assert set(body) == {"name", "version", "use_case", "schema_version", "patient_count",
                         "fingerprint", "quality_summary", "feature_schema"}
    assert body["patient_count"] == 20 and body["version"] == 1 and body["use_case"] == "MDS"
    assert "P0000" not in json.dumps(body)  # metadata only: no patient ids, no rows
    assert DatasetRegistry(w / "node").get("local-mds").announced_at is not None


def test_failed_announcement_keeps_registration_and_says_how_to_retry(workspace, capsys):
    w = workspace
    assert main(["etl", "--use-case", "mds", "--source", str(w / "h.csv"), "--out", str(w / "out")]) == 0
    with _Manager(status=503) as mgr:
        rc = main(["register", "--name", "d", "--dataset", str(w / "out"), "--data-dir", str(w / "node"),
                   "--manager", mgr.url, "--token-file", str(w / "token")])
    err = capsys.readouterr().err
    assert rc == 1 and "ANNOUNCING FAILED" in err and "503" in err
    assert "fedhaem-node register --announce-only --name d --version 1" in err
    entry = DatasetRegistry(w / "node").get("d")
    assert entry.version == 1 and entry.announced_at is None
    with _Manager() as mgr:
        rc = main(["register", "--announce-only", "--name", "d", "--version", "1", "--data-dir",
                   str(w / "node"), "--manager", mgr.url, "--token-file", str(w / "token")])
    assert rc == 0 and len(mgr.requests) == 1
    assert DatasetRegistry(w / "node").get("d").announced_at is not None


def test_unreachable_manager_is_an_announce_error():
    meta = {"name": "d", "version": 1, "use_case": "MDS", "schema_version": "1.0", "patient_count": 3,
            "fingerprint": "0" * 64, "quality_summary": {"patients": 3}, "feature_schema": ["age"]}
    with pytest.raises(AnnounceError, match="cannot reach"):
        announce("http://127.0.0.1:9", "t", meta, timeout=2)
    with pytest.raises(ValueError, match="not allowed"):
        validate_payload({**meta, "rows": [[1, 2]]})
    with pytest.raises(ValueError, match="aggregate"):
        validate_payload({**meta, "quality_summary": {"rejected": [{"patient_id": "P1"}]}})


def test_cli_missing_required_column_exits_nonzero_and_registers_nothing(workspace, capsys):
    w = workspace
    canonical_cohort(n=5).drop(columns=["age"]).to_csv(w / "bad.csv", index=False)
    rc = main(["etl", "--use-case", "mds", "--source", str(w / "bad.csv"), "--out", str(w / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing required column age" in err and "bad.csv" in err
    assert not (w / "out" / "manifest.json").exists()
    rc = main(["register", "--name", "x", "--dataset", str(w / "out"), "--data-dir", str(w / "node")])
    assert rc == 2 and "nothing was registered" in capsys.readouterr().err
    assert DatasetRegistry(w / "node").list() == []


def test_module_runs_standalone(workspace):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "etl.cli", "etl", "--use-case", "MDS", "--source",
                        str(workspace / "h.csv"), "--out", str(workspace / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (workspace / "o" / "table.parquet").exists()
