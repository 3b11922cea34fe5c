"""Security probe against a live demo (issue 12, "How we will know").

Starts `manage.py demo` in a fresh temporary var folder on free loopback ports,
takes an API token for every demo person and the demo worker nodes' tokens, then probes:

  * the role-by-endpoint matrix: every operation of /api/schema/ x every person + anonymous + a
    node token, with the status the role rules give (tests/portal/test_permissions.py is the
    project's reading of them), once on a real object and once on an id that does not exist;
  * the twelve findings of issue 12 (participation, approvals bound to settings, admin claims,
    node identity, metadata schema, revoke / re-approve, append-only audit, input bounds, var/
    modes, sign-out / CSP / rate limits / CSV formulas, health and malformed ids, ETL errors).

Each probe is one named check with an expected outcome. Prints
`{"tried": N, "held": N, "failed": [{"case", "detail"}, ...]}` (`--json`) or a summary.

    .venv/bin/python bench/security_probe.py --json
    .venv/bin/python bench/security_probe.py --json --quick   # the twelve cases + a matrix sample

Traffic goes to 127.0.0.1 only (the rate-limit probes come from 127.0.0.2, last); every request has
a timeout; the demo is always stopped (SIGTERM to its process group, then SIGKILL).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))



PEOPLE = {"clinician": "clinician", "coordinator": "coordinator", "data_manager": "datamanager",
          "node_operator": "nodeoperator", "administrator": "admin", "outsider": "outsider", "norole": "norole"}
ALL = list(PEOPLE)
ROLES = [p for p in ALL if p != "norole"]
SCIENCE = ["clinician", "coordinator", "data_manager", "administrator"]
COHORT_VIEW = SCIENCE  # synthesis.view_syntheticcohort
CALLERS = ALL + ["anonymous", "node"]
MISSING = 999_999_999  # an id no demo object has


def _fault_bench():
    """bench/faults.py, loaded by path (bench is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_faults", REPO / "bench" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Demo = _fault_bench().Demo  # one demo launcher for both benches


def fresh_p384_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Probe:
    def __init__(self, demo: Demo):
        self.demo = demo
        self.tried = 0
        self.held = 0
        self.failed: list[dict] = []
        self.tokens: dict[str, str] = {}
        self.node_tokens: dict[str, str] = {}

    # --- bookkeeping ---

    def check(self, case: str, ok: bool, detail: str = "") -> bool:
        self.tried += 1
        if ok:
            self.held += 1
        else:
            self.failed.append({"case": case, "detail": detail[:600]})
        return ok

    def guarded(self, case: str, fn) -> None:
        """Run one group of checks; an exception is one failed check naming the group."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the probe reports, it does not stop
            self.check(case, False, f"probe error: {type(exc).__name__}: {exc}")

    # --- HTTP ---

    def request(self, method: str, path: str, body=None, token: str | None = None, headers: dict | None = None,
                source: str | None = None, timeout: float = 20, raw: bytes | None = None):
        """(status, headers, body bytes); status 0 when the connection failed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.demo.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
        h = {"Accept": "application/json", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Token {token}"
        try:
            conn.request(method.upper(), path, body=data, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        except (OSError, http.client.HTTPException):
            return 0, {}, b""
        finally:
            conn.close()

    def api(self, method: str, path: str, body=None, who: str | None = "administrator", **kw):
        token = self.token_of(who)
        status, _, data = self.request(method, path, body, token=token, **kw)
        try:
            parsed = json.loads(data or b"{}")
        except ValueError:
            parsed = {}
        return status, parsed

    def token_of(self, who: str | None) -> str | None:
        if who in (None, "anonymous"):
            return None
        if who == "node":
            return self.node_tokens["hosp-a"]
        if who.startswith("node:"):
            return self.node_tokens[who[5:]]
        return self.tokens[who]

    def shell(self, code: str, timeout: float = 120) -> str:
        r = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=self.demo.env,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"shell: {r.stderr[-1500:]}")
        return r.stdout.strip()

    # --- set-up ---

    def setup(self) -> None:
        # one interpreter for the seven `manage.py api_token <username>` calls (each start costs seconds)
        code = ("import io\nfrom django.core.management import call_command\n"
                f"for u in {list(PEOPLE.values())!r}:\n"
                "    out = io.StringIO(); call_command('api_token', u, stdout=out); print(u, out.getvalue().strip())\n")
        by_user = dict(line.split() for line in self.shell(code).splitlines() if len(line.split()) == 2)
        for role, username in PEOPLE.items():
            self.tokens[role] = by_user[username]
        for d in sorted((self.demo.var / "demo-nodes").iterdir()):
            if (d / "token").exists():
                self.node_tokens[d.name] = (d / "token").read_text().strip()
        _, studies = self.api("GET", "/api/studies/", who="coordinator")
        rows = studies.get("results", studies) if isinstance(studies, dict) else studies
        self.study = next(s["id"] for s in rows if s.get("title", "").startswith("Demo: MDS"))
        _, nodes = self.api("GET", "/api/nodes/?page_size=100")
        self.nodes = {n["name"]: n for n in nodes.get("results", nodes)}
        _, dss = self.api("GET", "/api/datasets/?page_size=100")
        self.datasets = dss.get("results", dss)
        _, orgs = self.api("GET", "/api/organisations/?page_size=100")
        self.orgs = {o["code"]: o for o in orgs.get("results", orgs)}

    def dataset_of(self, node_name: str) -> dict:
        node_id = self.nodes[node_name]["id"]
        return next(d for d in self.datasets if d.get("node") in (node_id, node_name)
                    or (isinstance(d.get("node"), dict) and d["node"].get("id") == node_id))

    def wait_run(self, run_id: int, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            _, body = self.api("GET", f"/api/runs/{run_id}/", who="coordinator")
            if body.get("status") in ("finished", "failed", "cancelled"):
                return body
            time.sleep(3)
        return body

    # --- the twelve cases ---

    def case1_participation(self) -> None:
        """A 4th node of another organisation, approved by the administrator, is not in the run."""
        c = "1-participation"
        status, node = self.api("POST", "/api/nodes/", {"name": "probe-intruder", "organisation": "hosp-z",
                                                        "public_key": fresh_p384_key()})
        self.check(f"{c}: administrator registers a 4th node of hosp-z", status == 201, f"{status} {node}")
        status, body = self.api("POST", f"/api/nodes/{node.get('id')}/approve/")
        self.check(f"{c}: 4th node approved", status == 200 and bool(body.get("token")), f"{status}")
        intruder_token = body.get("token", "")
        self.node_tokens["probe-intruder"] = intruder_token
        status, appr = self.api("GET", "/api/nodes/approvals/", who="node:probe-intruder")
        items = appr if isinstance(appr, list) else appr.get("approvals", appr.get("results", []))
        self.check(f"{c}: 4th node's approvals list is empty", status == 200 and not items, f"{status} {appr}")
        status, run = self.api("POST", f"/api/studies/{self.study}/runs/", {"rounds": 1}, who="coordinator")
        self.check(f"{c}: coordinator starts a run of the approved demo study", status in (200, 201),
                   f"{status} {run}")
        self.run_id = run.get("id")
        if not self.run_id:
            return
        _, detail = self.api("GET", f"/api/runs/{self.run_id}/", who="coordinator")
        parts = (detail.get("config") or {}).get("participants") or []
        names = sorted(p.get("node") for p in parts)
        expected = sorted(n for n in self.nodes if n.startswith("hosp-"))
        self.check(f"{c}: run config names exactly the approved nodes", names == expected,
                   f"participants {names}, expected {expected}")
        self.check(f"{c}: every participant carries a Flower node id and a dataset fingerprint",
                   bool(parts) and all(p.get("node_id") and p.get("fingerprint") for p in parts),
                   json.dumps(parts)[:400])
        final = self.wait_run(self.run_id)
        self.run_final = final
        self.check(f"{c}: run finishes", final.get("status") == "finished",
                   f"{final.get('status')} {final.get('error', '')}")
        seen = {m.get("node") for m in final.get("metrics", [])}
        self.check(f"{c}: the 4th node never appears in the run's metrics", "probe-intruder" not in seen,
                   f"metric nodes {sorted(seen)}")
        n_train = {m.get("node") for m in final.get("metrics", []) if m.get("name") == "n_train"}
        self.check(f"{c}: only approved nodes report n_train", n_train <= set(expected) | {"global"},
                   f"n_train nodes {sorted(n_train)}")

    def case2_approval_binding(self) -> None:
        c = "2-approval-binding"
        code = ("from django.contrib.auth import get_user_model\n"
                "from portal.studies.models import Study\n"
                "from portal.studies import services\n"
                "from portal.ops import federation_demo as fd\n"
                "src = Study.objects.get(title=fd.STUDY_TITLE)\n"
                "coord = get_user_model().objects.get(username='coordinator')\n"
                "op = get_user_model().objects.get(username='nodeoperator')\n"
                "s = services.clone_study(coord, src)\n"
                "s.title = 'Security probe: approved then edited'; s.status = Study.Status.READY; s.save()\n"
                "[fd._approve_for_demo(s, ds, op) for ds in s.datasets.all()]\n"
                "print(s.pk)\n")
        sid = int(self.shell(code).splitlines()[-1])
        status, study = self.api("GET", f"/api/studies/{sid}/", who="coordinator")
        features = study.get("features") or []
        edit = {"rounds": int(study.get("rounds") or 3) + 1}
        if len(features) > 1:
            edit["features"] = features[:-1]
        status, body = self.api("PATCH", f"/api/studies/{sid}/", edit, who="coordinator")
        self.check(f"{c}: coordinator edits the study after approval ({sorted(edit)})", status == 200,
                   f"{status} {body}")
        status, body = self.api("POST", f"/api/studies/{sid}/runs/", {"rounds": 1}, who="coordinator")
        self.check(f"{c}: a run of the edited study is refused with 409", status == 409, f"{status} {body}")
        status, body = self.api("GET", f"/api/studies/{sid}/approvals/", who="coordinator")
        rows = body if isinstance(body, list) else body.get("results", body.get("approvals", []))
        self.check(f"{c}: the approvals say they are stale", bool(rows) and all(r.get("stale") for r in rows),
                   json.dumps(rows)[:400])
        status = self.request("GET", f"/studies/{sid}/")[0]
        self.check(f"{c}: study page answers (no 500)", status in (200, 302), f"{status}")

    def case3_admin_claims(self) -> None:
        c = "3-admin-claims"
        status, body = self.api("PATCH", "/api/me/", {"is_superuser": True, "is_staff": True,
                                                      "roles": ["administrator", "node_operator"],
                                                      "organisation": "hosp-b"})
        _, me = self.api("GET", "/api/me/")
        self.check(f"{c}: PATCH /api/me/ cannot grant roles, organisation or superuser",
                   status in (200, 400) and not me.get("is_superuser") and sorted(me.get("roles", [])) == ["administrator"]
                   and me.get("organisation") in ("hosp-a", None, {}) or (isinstance(me.get("organisation"), dict)
                                                                          and me["organisation"].get("code") == "hosp-a"),
                   f"{status} {me}")
        code = ("from django.contrib import admin\nfrom django.contrib.auth import get_user_model\n"
                "from django.test import RequestFactory\n"
                "U = get_user_model(); a = U.objects.get(username='admin'); a.is_staff = True\n"
                "r = RequestFactory().get('/admin/'); r.user = a\n"
                "ma = admin.site._registry[U]\n"
                "print(sorted(ma.get_readonly_fields(r, a)))\n"
                "print(U.objects.filter(is_superuser=True).count())\n")
        out = self.shell(code).splitlines()
        ro = out[-2] if len(out) >= 2 else ""
        for field in ("is_superuser", "groups", "organisation", "is_staff", "username"):
            self.check(f"{c}: admin site shows {field} read-only", f"'{field}'" in ro, ro)
        self.check(f"{c}: nobody is superuser in the demo", out[-1:] == ["0"], str(out[-1:]))

    def case4_heartbeat_identity(self) -> None:
        c = "4-node-identity"
        a, b = self.nodes["hosp-a"], self.nodes["hosp-b"]
        status, _ = self.api("POST", "/api/nodes/heartbeat/", {"status": "ok",
                                                               "flower_node_id": str(a.get("flower_node_id") or 1)},
                             who="node:hosp-b")
        self.check(f"{c}: heartbeat claiming another node's Flower id is answered", status in (200, 400), f"{status}")
        _, after = self.api("GET", f"/api/nodes/{b['id']}/")
        self.check(f"{c}: hosp-b's Flower node id unchanged", after.get("flower_node_id") == b.get("flower_node_id"),
                   f"before {b.get('flower_node_id')} after {after.get('flower_node_id')}")
        status, body = self.api("POST", "/api/nodes/", {"name": "probe-copy", "organisation": "hosp-a",
                                                        "public_key": a.get("public_key", "")})
        self.check(f"{c}: another node cannot take hosp-a's key", status == 400, f"{status} {body}")

    def case5_metadata(self) -> None:
        c = "5-metadata-schema"
        rows = [{"patient_id": f"P{i:04d}", "age": 60 + i, "hb": 9.5, "os_months": 12 + i} for i in range(30)]
        base = {"name": "probe-ds", "version": 1, "use_case": "MDS", "schema_version": "1.0", "patient_count": 30,
                "fingerprint": "c" * 64}
        status, body = self.api("POST", "/api/nodes/datasets/", {**base, "quality_summary": rows}, who="node")
        self.check(f"{c}: row-shaped quality_summary (list of records) -> 400", status == 400, f"{status}")
        status, body = self.api("POST", "/api/nodes/datasets/",
                                {**base, "quality_summary": {"rows": rows}}, who="node")
        self.check(f"{c}: records nested in quality_summary -> 400", status == 400, f"{status}")
        status, body = self.api("POST", "/api/nodes/datasets/",
                                {**base, "quality_summary": {"P0001": {"age": 61}, "P0002": {"age": 62}}}, who="node")
        self.check(f"{c}: patient ids as keys -> 400", status == 400, f"{status}")
        status, body = self.api("POST", "/api/nodes/datasets/",
                                {**base, "quality_summary": {"hb": list(range(30))}}, who="node")
        self.check(f"{c}: per-patient value list -> 400", status == 400, f"{status}")
        _, audit = self.api("GET", "/api/audit/?page_size=200")
        actions = {e.get("action") for e in audit.get("results", [])}
        self.check(f"{c}: refusal audited (dataset.metadata_refused)", "dataset.metadata_refused" in actions,
                   str(sorted(a for a in actions if a))[:300])

    def case6_revoke_reapprove(self) -> None:
        c = "6-revoke-reapprove"
        key = fresh_p384_key()
        status, node = self.api("POST", "/api/nodes/", {"name": "probe-revoked", "organisation": "hosp-a",
                                                        "public_key": key}, who="node_operator")
        self.check(f"{c}: node operator registers a node of their organisation", status == 201, f"{status} {node}")
        nid = node.get("id")
        _, body = self.api("POST", f"/api/nodes/{nid}/approve/")
        token = body.get("token", "")
        self.node_tokens["probe-revoked"] = token
        status, _ = self.api("POST", "/api/nodes/heartbeat/", {"status": "ok"}, who="node:probe-revoked")
        self.check(f"{c}: approved node's token works", status == 200, f"{status}")
        status, body = self.api("POST", f"/api/nodes/{nid}/revoke/", {"reason": "probe"})
        self.check(f"{c}: administrator revokes", status == 200 and body.get("status") == "revoked", f"{status} {body}")
        status, _ = self.api("POST", "/api/nodes/heartbeat/", {"status": "ok"}, who="node:probe-revoked")
        self.check(f"{c}: revoked node's token refused (401)", status == 401, f"{status}")
        status, body = self.api("POST", "/api/nodes/", {"name": "probe-reuse", "organisation": "hosp-a",
                                                        "public_key": key})
        self.check(f"{c}: the revoked (retired) key cannot name another node", status == 400, f"{status} {body}")
        other = self.nodes["hosp-a"].get("public_key", "")
        status, body = self.api("POST", f"/api/nodes/{nid}/replace-key/", {"public_key": other}, who="node_operator")
        self.check(f"{c}: replace-key refuses another node's key", status == 400, f"{status} {body}")
        status, body = self.api("POST", f"/api/nodes/{nid}/replace-key/", {"public_key": fresh_p384_key()},
                                who="node_operator")
        self.check(f"{c}: replace-key with a new key", status == 200, f"{status} {body}")
        status, body = self.api("POST", f"/api/nodes/{nid}/approve/")
        self.check(f"{c}: re-approval issues a fresh token", status == 200 and body.get("token")
                   and body.get("token") != token, f"{status}")
        new = body.get("token", "")
        status, _ = self.request("POST", "/api/nodes/heartbeat/", {"status": "ok"}, token=new)[:2]
        self.check(f"{c}: re-approved node's new token works", status == 200, f"{status}")
        status, _ = self.request("POST", "/api/nodes/heartbeat/", {"status": "ok"}, token=token)[:2]
        self.check(f"{c}: the old token stays dead", status == 401, f"{status}")

    def superlink_node_status(self) -> dict:
        """Flower node id -> status at the demo's SuperLink (the flwr CLI, via the portal's settings)."""
        code = ("import json\nfrom django.conf import settings\nfrom fl_engine.deploy import control\n"
                "from portal.studies.flower_adapter import _conn\n"
                "print(json.dumps({n['node-id']: str(n.get('status', '')).lower() "
                "for n in control.list_nodes(settings.FLOWER_CONTROL_ADDRESS, **_conn())}))\n")
        return json.loads(self.shell(code).splitlines()[-1])

    def wait_flower_id(self, nid: int, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, node = self.api("GET", f"/api/nodes/{nid}/")
            if node.get("flower_node_id"):
                return node["flower_node_id"]
            time.sleep(2)
        return ""

    def case6_superlink_keys(self) -> None:
        """Revocation unregisters exactly the node's key at the SuperLink, also when the node
        operator tries to replace the key right after the revocation: that is refused (409, naming
        why) until the old key is unregistered, then accepted."""
        c = "6-revoke-superlink"
        for label, replace_at_once in (("revoke", False), ("revoke then replace-key at once", True)):
            status, node = self.api("POST", "/api/nodes/", {"name": f"probe-sl-{int(replace_at_once)}",
                                                            "organisation": "hosp-a", "public_key": fresh_p384_key()})
            nid = node.get("id")
            self.api("POST", f"/api/nodes/{nid}/approve/")
            old = self.wait_flower_id(nid)
            if not self.check(f"{c}: approval registers the key at the SuperLink ({label})", bool(old), "no Flower id"):
                continue
            self.api("POST", f"/api/nodes/{nid}/revoke/", {"reason": "probe"})
            early = None
            if replace_at_once:
                early = self.api("POST", f"/api/nodes/{nid}/replace-key/", {"public_key": fresh_p384_key()},
                                 who="node_operator")
                status, body = early
                self.check(f"{c}: replace-key right after revocation is accepted, or refused until the old key "
                           "is unregistered", status == 200 or (status == 409 and "still registered" in str(body)),
                           f"{status} {body}")
            deadline = time.monotonic() + 45
            state = "?"
            while time.monotonic() < deadline:
                state = self.superlink_node_status().get(old, "absent")
                if state in ("unregistered", "absent"):
                    break
                time.sleep(3)
            self.check(f"{c}: the revoked key is unregistered at the SuperLink ({label})",
                       state in ("unregistered", "absent"), f"Flower node {old} is still '{state}' 45 s later")
            if early is not None and early[0] == 409:
                until = time.monotonic() + 15  # the sync task records the unregistration just after it
                while True:
                    status, body = self.api("POST", f"/api/nodes/{nid}/replace-key/",
                                            {"public_key": fresh_p384_key()}, who="node_operator")
                    if status != 409 or time.monotonic() > until:
                        break
                    time.sleep(1)
                self.check(f"{c}: replace-key accepted once the old key is unregistered", status == 200,
                           f"{status} {body}")

    def case7_audit(self) -> None:
        c = "7-audit-append-only"
        code = ("from django.db import connection\nfrom portal.audit.models import AuditEvent\n"
                "t = AuditEvent._meta.db_table\n"
                "for sql in (f'UPDATE {t} SET action = %s', f'DELETE FROM {t}'):\n"
                "    try:\n"
                "        with connection.cursor() as cur: cur.execute(sql, ['x'] if '%s' in sql else None)\n"
                "        print('ALLOWED')\n"
                "    except Exception as e:\n"
                "        print('REFUSED', type(e).__name__)\n"
                "try:\n"
                "    AuditEvent.objects.all().update(action='x'); print('ALLOWED')\n"
                "except Exception as e:\n"
                "    print('REFUSED', type(e).__name__)\n")
        out = self.shell(code).splitlines()[-3:]
        for name, line in zip(("raw SQL UPDATE", "raw SQL DELETE", "queryset update()"), out):
            self.check(f"{c}: {name} refused", line.startswith("REFUSED"), line)
        r = subprocess.run([sys.executable, "manage.py", "audit_verify"], cwd=REPO, env=self.demo.env,
                           capture_output=True, text=True, timeout=120)
        self.check(f"{c}: audit_verify passes on the live chain", r.returncode == 0, (r.stdout + r.stderr)[-300:])

    def case8_bounds(self) -> None:
        c = "8-input-bounds"
        ds = self.dataset_of("hosp-a")["id"]
        base = {"title": "probe bounds", "use_case": "MDS", "endpoint": "os", "datasets": [ds],
                "features": ["age", "hb"], "model_kind": "deepsurv", "rounds": 3}
        for label, extra in [("hidden [1e9]", {"hyperparameters": {"hidden": [1_000_000_000]}}),
                             ("hidden [-5]", {"hyperparameters": {"hidden": [-5]}}),
                             ("hidden [0]", {"hyperparameters": {"hidden": [0]}}),
                             ("dropout 5", {"hyperparameters": {"dropout": 5}}),
                             ("100,000 features", {"features": [f"f{i}" for i in range(100_000)]}),
                             ("rounds 10^9", {"rounds": 1_000_000_000}),
                             ("datasets 201 ids", {"datasets": list(range(1, 202))})]:
            status, body = self.api("POST", "/api/studies/", {**base, **extra}, who="coordinator", timeout=60)
            self.check(f"{c}: study with {label} -> 400", status == 400, f"{status} {str(body)[:200]}")
        ann = {"name": "probe-big", "version": 1, "use_case": "MDS", "schema_version": "1.0", "patient_count": 10,
               "fingerprint": "d" * 64}
        for label, extra in [("patient_count 10^12", {"patient_count": 10 ** 12}), ("version 2^40", {"version": 2 ** 40}),
                             ("fingerprint not sha256", {"fingerprint": "zz"})]:
            status, body = self.api("POST", "/api/nodes/datasets/", {**ann, **extra}, who="node")
            self.check(f"{c}: announcement with {label} -> 400", status == 400, f"{status} {str(body)[:200]}")
        status, body = self.api("POST", "/api/nodes/", {"name": "global", "organisation": "hosp-a",
                                                        "public_key": fresh_p384_key()})
        self.check(f"{c}: a node named global -> 400", status == 400, f"{status} {body}")
        status, body = self.api("POST", "/api/nodes/", {"name": "probe-foreign", "organisation": "hosp-a",
                                                        "public_key": fresh_p384_key()}, who="outsider")
        self.check(f"{c}: a node operator cannot register another organisation's node", status == 400,
                   f"{status} {body}")

    def case9_var_modes(self) -> None:
        c = "9-var-permissions"
        loose = []
        for root, dirs, files in os.walk(self.demo.var):
            for name in dirs + files:
                p = Path(root) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                    continue
                if st.st_mode & 0o077:
                    loose.append(f"{p.relative_to(self.demo.var)} {oct(st.st_mode & 0o777)}")
        top = self.demo.var.stat().st_mode & 0o777
        self.check(f"{c}: var/ itself is 0700", top == 0o700, oct(top))
        for name in ("fedhaem.sqlite3", "secrets"):
            p = self.demo.var / name
            if p.exists():
                self.check(f"{c}: var/{name} private", not (p.stat().st_mode & 0o077), oct(p.stat().st_mode & 0o777))
        self.check(f"{c}: no entry under var/ readable by group or others", not loose,
                   f"{len(loose)} entries: " + "; ".join(loose[:12]))

    def case10_web(self) -> None:
        c = "10-web"
        status, headers, _ = self.request("GET", "/", headers={"Accept": "text/html"})
        csp = headers.get("content-security-policy", "")
        self.check(f"{c}: CSP header on the home page", bool(csp) and "script-src" in csp or "default-src" in csp,
                   f"{status} {csp[:200]}")
        self.check(f"{c}: CSP forbids inline script", "'unsafe-inline'" not in
                   (re.search(r"script-src[^;]*", csp) or re.search(r"default-src[^;]*", csp) or [""])[0], csp[:300])
        # a signed-in administrator's session: a page under CSP, then sign-out goes to the provider
        code = ("from django.contrib.auth import get_user_model, SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY\n"
                "from django.contrib.sessions.backends.db import SessionStore\n"
                "u = get_user_model().objects.get(username='admin')\n"
                "s = SessionStore(); s[SESSION_KEY] = str(u.pk)\n"
                "from django.conf import settings\ns[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]\n"
                "s[HASH_SESSION_KEY] = u.get_session_auth_hash(); s['oidc_id_token'] = 'probe.id.token'\n"
                "import time; s['oidc_id_token_expiration'] = time.time() + 3600\n"
                "s.create(); print(s.session_key)\n")
        try:
            sid = self.shell(code).splitlines()[-1]
        except RuntimeError as exc:
            self.check(f"{c}: a session for the sign-out probe", False, str(exc))
            return
        cookie = f"sessionid={sid}"
        status, headers, page = self.request("GET", "/", headers={"Accept": "text/html", "Cookie": cookie})
        self.check(f"{c}: CSP header on a signed-in page", status == 200 and "content-security-policy" in headers,
                   f"{status}")
        status, _, _ = self.request("GET", "/api/me/", headers={"Cookie": cookie})
        self.check(f"{c}: the probe's session is signed in", status == 200, f"{status}")
        token = form = os.urandom(16).hex()  # a 32-character CSRF secret: cookie and header agree
        status, headers, _ = self.request(
            "POST", "/oidc/logout/", raw=urllib.parse.urlencode({"csrfmiddlewaretoken": form}).encode(),
            headers={"Cookie": f"{cookie}; csrftoken={token}", "Content-Type": "application/x-www-form-urlencoded",
                     "Referer": self.demo.base + "/", "Origin": self.demo.base, "X-CSRFToken": form})
        loc = headers.get("location", "")
        issuer = f"http://127.0.0.1:{self.demo.env['DEV_IDP_PORT']}/o/logout/"
        self.check(f"{c}: sign-out redirects to the provider's end-session endpoint",
                   status == 302 and loc.startswith(issuer) and "post_logout_redirect_uri" in loc
                   and "id_token_hint" in loc, f"{status} {loc[:300]}")
        status, headers, _ = self.request("GET", "/api/me/", headers={"Cookie": cookie})
        self.check(f"{c}: the portal session ends at sign-out", status in (401, 403), f"{status}")
        # CSV formulas in the audit export
        self.api("POST", "/api/nodes/", {"name": "=cmd|' /C calc'!A0", "organisation": "hosp-a",
                                         "public_key": fresh_p384_key()})
        self.api("PATCH", "/api/me/", {"timezone": "@SUM(1+1)"})
        status, _, data = self.request("GET", "/api/audit/export/", token=self.tokens["administrator"],
                                       headers={"Accept": "*/*"})
        import csv
        import io
        cells = [cell for row in csv.reader(io.StringIO(data.decode("utf-8", "replace"))) for cell in row]
        live = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
        self.check(f"{c}: audit CSV export carries no cell starting with = + - @", status == 200 and not live,
                   f"{status} {live[:5]}")

    def case11_health_ids(self) -> None:
        c = "11-health-ids"
        status, body = self.api("GET", "/api/health/", who="anonymous")
        self.check(f"{c}: anonymous health is status only", status == 200 and set(body) == {"status"},
                   f"{status} {body}")

        def one(_):
            t = time.monotonic()
            s, _, _ = self.request("GET", "/api/health/", timeout=30)
            return s, time.monotonic() - t

        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            results = list(pool.map(one, range(5)))
        self.check(f"{c}: 5 concurrent anonymous health calls each under 2 s",
                   all(s == 200 and d < 2.0 for s, d in results), str([(s, round(d, 2)) for s, d in results]))
        status, _, data = self.request("GET", "/api/health/", token=self.tokens["administrator"])
        self.check(f"{c}: administrator sees health details", status == 200 and b"nodes" in data, f"{status}")
        for q in ("1" * 25, "abc", "-1", "0", str(2 ** 63)):
            status, _ = self.api("GET", f"/api/runs/?study={q}", who="coordinator")
            self.check(f"{c}: /api/runs/?study={q} -> 400", status == 400, f"{status}")
        for path in ("/api/runs/abc/", "/api/studies/" + "9" * 25 + "/", "/api/nodes/-1/"):
            status, _ = self.api("GET", path, who="administrator")
            self.check(f"{c}: GET {path} -> 404", status == 404, f"{status}")
        for path in ("/ws/runs/abc/", "/ws/runs/" + "9" * 25 + "/", f"/ws/runs/{getattr(self, 'run_id', 1)}/"):
            status, line = self.ws_handshake(path)
            self.check(f"{c}: websocket {path[:30]} anonymous -> closed, no 500", status != 500 and status != 0
                       and (status != 101 or line == "closed"), f"{status} {line}")

    def ws_handshake(self, path: str) -> tuple[int, str]:
        """Raw HTTP upgrade; (HTTP status, 'closed' if the server closed the socket after 101)."""
        import base64
        with socket.create_connection(("127.0.0.1", self.demo.port), timeout=10) as s:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.demo.port}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                       f"Origin: {self.demo.base}\r\n\r\n").encode())
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            m = re.match(rb"HTTP/1\.1 (\d{3})", data)
            status = int(m.group(1)) if m else 0
            if status != 101:
                return status, ""
            rest = data.split(b"\r\n\r\n", 1)[1]
            try:
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    if len(rest) >= 2 and rest[0] & 0x0F == 0x8:
                        return 101, "closed"
                    chunk = s.recv(4096)
                    if not chunk:
                        return 101, "closed"
                    rest += chunk
            except OSError:
                return 101, "closed"
            return 101, "open"

    def case12_etl(self) -> None:
        c = "12-etl"
        exe = str(Path(sys.executable).parent / "fedhaem-node")
        with tempfile.TemporaryDirectory(prefix="probe-etl-") as tmp:
            t = Path(tmp)
            big = t / "big.csv"
            big.write_text("patient_id,age,sex\nP1," + "9" * (5 * 1024 * 1024) + ",F\n")
            r = subprocess.run([exe, "etl", "--use-case", "mds", "--source", str(big), "--out", str(t / "o1")],
                               capture_output=True, text=True, timeout=180, cwd=tmp)
            err = r.stdout + r.stderr
            self.check(f"{c}: a 5 MB cell is a named error, not a traceback",
                       r.returncode != 0 and "Traceback" not in err and "big.csv" in err, f"rc {r.returncode} {err[-300:]}")
            afile = t / "afile"
            afile.write_text("x")
            small = t / "small.csv"
            small.write_text("patient_id,age,sex\nP1,70,F\n")
            for label, out in (("--out an existing file", afile), ("--out under a file", afile / "sub")):
                r = subprocess.run([exe, "etl", "--use-case", "mds", "--source", str(small), "--out", str(out)],
                                   capture_output=True, text=True, timeout=180, cwd=tmp)
                err = r.stdout + r.stderr
                self.check(f"{c}: {label} is refused without a traceback",
                           r.returncode != 0 and "Traceback" not in err, f"rc {r.returncode} {err[-300:]}")

    # --- rate limits (last, from 127.0.0.2) ---

    def case10_rate_limits(self) -> None:
        c = "10-rate-limit"
        src = "127.0.0.2"
        statuses = [self.request("GET", "/api/me/", token=f"wrong{i:036d}", source=src)[0] for i in range(31)]
        self.check(f"{c}: 31 wrong tokens end in 429", statuses[-1] == 429 and 500 not in statuses,
                   f"{statuses}")
        status = self.request("GET", "/api/me/", token=self.tokens["clinician"], source=src)[0]
        self.check(f"{c}: the right token is refused too while locked (429)", status == 429, f"{status}")
        status = self.request("GET", "/api/me/", token=self.tokens["clinician"])[0]
        self.check(f"{c}: another address is not locked", status == 200, f"{status}")
        idp = int(self.demo.env["DEV_IDP_PORT"])
        codes = []
        for i in range(12):
            conn = http.client.HTTPConnection("127.0.0.1", idp, timeout=10, source_address=(src, 0))
            try:
                conn.request("GET", "/accounts/login/")
                r = conn.getresponse()
                page = r.read()
                cookie = "; ".join(v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie")
                m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
                body = urllib.parse.urlencode({"username": "clinician", "password": f"wrong{i}",
                                               "csrfmiddlewaretoken": m.group(1).decode() if m else ""})
                conn.request("POST", "/accounts/login/", body=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie,
                    "Referer": f"http://127.0.0.1:{idp}/accounts/login/"})
                r = conn.getresponse()
                r.read()
                codes.append(r.status)
            except (OSError, http.client.HTTPException):
                codes.append(0)
            finally:
                conn.close()
        self.check(f"{c}: 12 wrong passwords at the identity provider end in 429", codes[-1] == 429, f"{codes}")

    # --- the role-by-endpoint matrix ---

    def matrix_ops(self) -> list[tuple]:
        """(method, path template, body factory, allowed roles or callers, ok status, overrides)."""
        s, d = self.study, self.dataset_of("hosp-a")["id"]
        org = self.orgs["hosp-a"]["id"]
        model = ((getattr(self, "run_final", {}) or {}).get("model_version") or {}).get("id") or MISSING
        run = getattr(self, "run_id", None) or MISSING
        ok_model = 200 if model != MISSING else 404
        ok_run = 200 if run != MISSING else 404
        key = fresh_p384_key
        none_ = lambda: None  # noqa: E731
        out = [
            ("GET", "/api/health/", none_, CALLERS, 200, {}),
            ("GET", "/api/me/", none_, ALL + ["node"], 200, {}),
            ("PATCH", "/api/me/", lambda: {"timezone": "Europe/Madrid"}, ALL + ["node"], 200, {}),
            ("GET", "/api/organisations/", none_, ROLES, 200, {}),
            ("POST", "/api/organisations/", lambda: {"code": f"probe-{os.urandom(3).hex()}", "name": "Probe"},
             ["administrator"], 201, {}),
            ("GET", f"/api/organisations/{org}/", none_, ROLES, 200, {}),
            ("PATCH", f"/api/organisations/{org}/", lambda: {"name": self.orgs["hosp-a"]["name"]},
             ["administrator"], 200, {}),
            ("GET", "/api/nodes/", none_, ROLES, 200, {}),
            ("POST", "/api/nodes/", lambda: {"name": f"probe-{os.urandom(3).hex()}", "organisation": "hosp-a",
                                             "public_key": key()},
             ["administrator", "node_operator"], 201, {"outsider": 400}),
            ("GET", f"/api/nodes/{self.nodes['hosp-a']['id']}/", none_, ROLES, 200, {"outsider": 404}),
            ("POST", "/api/nodes/{pending}/approve/", none_, ["administrator"], 200, {}),
            ("POST", "/api/nodes/{pending}/revoke/", none_, ["administrator"], 200, {}),
            ("POST", "/api/nodes/{pending}/replace-key/", lambda: {"public_key": key()},
             ["administrator", "node_operator"], 200, {"outsider": 404}),
            ("GET", "/api/nodes/approvals/", none_, ["node"], 200, {}),
            ("POST", "/api/nodes/heartbeat/", lambda: {"status": "ok"}, ["node"], 200, {}),
            # the heartbeat's privacy-ledger report and policy limits: validated, a bad one is a 400
            ("POST", "/api/nodes/heartbeat/", lambda: {"status": "ok", "privacy": {"datasets": "all"},
                                                       "policy_limits": {"mds": {"min_cell_count": -1}}},
             ["node"], 400, {}),
            ("POST", "/api/nodes/datasets/", lambda: {"name": "x"}, ["node"], 400, {}),
            ("POST", "/api/nodes/refusals/", lambda: {}, ["node"], 400, {}),
            ("GET", "/api/datasets/", none_, ROLES, 200, {}),
            ("GET", f"/api/datasets/{d}/", none_, ROLES, 200, {"outsider": 404}),
            # registration: hospital A's clinician only (the demo's policy again, so nothing else changes)
            ("POST", f"/api/datasets/{d}/registration/",
             lambda: {"title": "Demo myelodysplastic syndromes cohort, hosp-a", "contact": "clinician@hosp-a.example.org",
                      "policy": {"sensitivity": "general", "consent_scope": "fine_grained",
                                 "purposes": ["analysis", "synthesis", "training"], "require_dp": False,
                                 "min_cell_count": 0, "expires_on": None}},
             ["clinician"], 200, {"outsider": 404}),
            ("GET", f"/api/datasets/{d}/node-limits/", none_, ROLES, 200, {"outsider": 404}),
            ("GET", "/api/studies/", none_, ROLES, 200, {}),
            ("POST", "/api/studies/", lambda: {"title": "probe study", "use_case": "MDS", "endpoint": "os",
                                               "datasets": [d], "features": ["age", "hb"],
                                               "model_kind": "deepsurv", "rounds": 3}, ["coordinator"], 201, {}),
            ("GET", f"/api/studies/{s}/", none_, ROLES, 200, {"outsider": 404}),
            ("PATCH", "/api/studies/{clone}/", lambda: {"rounds": 4}, ["coordinator"], 200, {}),
            ("POST", f"/api/studies/{s}/clone/", none_, ["coordinator"], 201, {}),
            ("GET", f"/api/studies/{s}/runs/", none_, ROLES, 200, {"outsider": 404}),
            ("POST", "/api/studies/{clone}/runs/", lambda: {"rounds": 2}, ["coordinator"], 409, {}),
            ("GET", f"/api/studies/{s}/approvals/", none_, ROLES, 200, {"outsider": 404}),
            ("POST", f"/api/studies/{s}/approvals/", lambda: {"dataset": d, "decision": "approved"},
             ["node_operator"], 200, {"outsider": 404}),
            ("GET", f"/api/studies/{s}/generation-runs/", none_, ROLES, 200, {"outsider": 404}),
            ("POST", "/api/studies/{clone}/generation-runs/", lambda: {"generator": "no-such-generator"},
             ["coordinator"], 400, {}),
            ("GET", f"/api/studies/{s}/analysis-runs/", none_, ROLES, 200, {"outsider": 404}),
            ("POST", "/api/studies/{clone}/analysis-runs/", none_, ["coordinator"], 400, {}),  # no analysis settings
            ("GET", f"/api/analysis-runs/{MISSING}/report/", none_, ROLES, 404, {}),
            ("GET", f"/api/analysis-runs/{MISSING}/km.csv", none_, ROLES, 404, {}),
            ("GET", f"/api/studies/{s}/grid-runs/", none_, ROLES, 200, {"outsider": 404}),
            ("POST", "/api/studies/{clone}/grid-runs/", lambda: {"source": "no-such", "n": -1}, ["coordinator"],
             400, {}),
            ("GET", "/api/runs/", none_, ROLES, 200, {}),
            ("GET", f"/api/runs/{run}/", none_, ROLES, ok_run, {"outsider": 404}),
            ("POST", f"/api/runs/{run}/cancel/", none_, ["coordinator"], ok_run if run == MISSING else 409, {}),
            ("POST", f"/api/runs/{run}/events/", lambda: {"seq": 1, "type": "round", "round": 1, "metrics": []},
             [], 401, {}),
            ("GET", "/api/models/", none_, SCIENCE, 200, {}),
            ("GET", f"/api/models/{model}/", none_, SCIENCE, ok_model, {}),
            ("GET", f"/api/models/{model}/download/", none_, SCIENCE, ok_model, {}),
            ("GET", f"/api/models/{model}/capsule/", none_, SCIENCE, ok_model, {}),
            ("POST", f"/api/models/{model}/alias/", lambda: {"alias": "candidate", "reason": "security probe"},
             ["coordinator"], ok_model, {}),
            ("POST", f"/api/models/{model}/tags/", lambda: {"key": "probe", "value": "x", "reason": "security probe"},
             ["coordinator"], ok_model, {}),
            ("GET", "/api/cohorts/", none_, COHORT_VIEW, 200, {}),
            ("GET", f"/api/cohorts/{MISSING}/", none_, COHORT_VIEW, 404, {}),
            ("GET", f"/api/cohorts/{MISSING}/download/", none_, COHORT_VIEW, 404, {}),
            ("GET", f"/api/cohorts/{MISSING}/download-parquet/", none_, COHORT_VIEW, 404, {}),
            ("POST", f"/api/cohorts/{MISSING}/release/", none_, ["coordinator"], 404, {}),
            ("GET", f"/api/grid-runs/{MISSING}/", none_, ROLES, 404, {}),
            ("POST", f"/api/grid-runs/{MISSING}/cancel/", none_, ["coordinator"], 404, {}),
            ("GET", f"/api/grid-runs/{MISSING}/results.csv", none_, ROLES, 404, {}),
            ("GET", "/api/audit/", none_, ["administrator"], 200, {}),
            ("GET", "/api/audit/1/", none_, ["administrator"], 200, {}),
            ("GET", "/api/audit/export/", none_, ["administrator"], 200, {}),
        ]
        return out

    def expected(self, who: str, allowed: list[str], ok: int, overrides: dict, path: str) -> int:
        if who in overrides:
            return overrides[who]
        if who == "anonymous":
            return 200 if path == "/api/health/" else 401
        if path.endswith("/events/"):
            return 401
        return ok if who in allowed else 403

    def matrix(self, quick: bool = False) -> int:
        """Every operation x every caller, on a real object and on a missing id. Returns the count of
        schema operations the matrix does not cover (each is one failed check)."""
        status, _, data = self.request("GET", "/api/schema/?format=json", token=self.tokens["administrator"],
                                       headers={"Accept": "application/vnd.oai.openapi+json"})
        schema = json.loads(data) if status == 200 else {"paths": {}}
        in_schema = {(m.upper(), p) for p, ops in schema.get("paths", {}).items() for m in ops
                     if m in ("get", "post", "put", "patch", "delete")}
        ops = self.matrix_ops()
        covered = {(m, re.sub(r"/analysis-runs/\{id\}/\w+\.csv$", "/analysis-runs/{id}/{table}.csv",
                              re.sub(r"/(\d+|\{\w+\})/", "/{id}/", p)))
                   for m, *_rest in ops for p in [_rest[0]]}
        for op in sorted(in_schema):
            self.check(f"matrix: schema operation {op[0]} {op[1]} is probed", op in covered, "not in the matrix")
        # a pending node of hosp-a for approve / revoke / replace-key
        _, pending = self.api("POST", "/api/nodes/", {"name": "probe-pending", "organisation": "hosp-a",
                                                      "public_key": fresh_p384_key()})
        _, clone = self.api("POST", f"/api/studies/{self.study}/clone/", who="coordinator")
        ids = {"pending": pending.get("id", MISSING), "clone": clone.get("id", MISSING)}
        callers = CALLERS if not quick else ["anonymous", "clinician", "coordinator", "outsider", "node"]
        for method, template, body, allowed, ok, overrides in ops:
            path = template.format(**ids)
            # allowed callers last: a write that succeeds must not change what the others see
            order = sorted(callers, key=lambda w: (self.expected(w, allowed, ok, overrides, path) < 300, w))
            for who in order:
                want = self.expected(who, allowed, ok, overrides, path)
                status, resp = self.api(method, path, body(), who=who)
                self.check(f"matrix: {who} {method} {template}", status == want,
                           f"got {status}, expected {want}: {str(resp)[:200]}")
            m = re.search(r"/(\d+|\{\w+\})/", template)
            if not m or quick and template.count("/") > 4:
                continue
            missing = template.replace(m.group(0), f"/{MISSING}/", 1).format(**ids)
            for who in order:
                want = self.expected(who, allowed, ok, overrides, path)
                if want < 400 or want in (400, 409):
                    want = 404
                if template.endswith("/events/"):
                    want = 404  # no such run: nothing to authenticate against
                if "replace-key" in template and who in ROLES:
                    want = 404  # the object is looked up before the organisation check
                status, resp = self.api(method, missing, body(), who=who)
                self.check(f"matrix: {who} {method} {template} on a missing id", status == want,
                           f"got {status}, expected {want}: {str(resp)[:200]}")
        return 0


def run(quick: bool = False, keep_var: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="fedhaem-security-"))
    demo = Demo(tmp / "var")
    probe = Probe(demo)
    try:
        demo.start()
        if not demo.wait_healthy(timeout=60):
            raise RuntimeError("demo not healthy with three nodes online before the deadline")
        probe.setup()
        probe.guarded("1-participation", probe.case1_participation)
        for name, fn in [("2-approval-binding", probe.case2_approval_binding), ("3-admin-claims", probe.case3_admin_claims),
                         ("4-node-identity", probe.case4_heartbeat_identity), ("5-metadata-schema", probe.case5_metadata),
                         ("6-revoke-reapprove", probe.case6_revoke_reapprove),
                         ("6-revoke-superlink", probe.case6_superlink_keys), ("7-audit", probe.case7_audit),
                         ("8-input-bounds", probe.case8_bounds), ("9-var-permissions", probe.case9_var_modes),
                         ("10-web", probe.case10_web), ("11-health-ids", probe.case11_health_ids),
                         ("12-etl", probe.case12_etl), ("matrix", lambda: probe.matrix(quick)),
                         ("10-rate-limit", probe.case10_rate_limits)]:
            probe.guarded(name, fn)
    except Exception as exc:  # noqa: BLE001
        probe.check("demo", False, f"{type(exc).__name__}: {exc}")
    finally:
        demo.stop()
        if not keep_var:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return {"tried": probe.tried, "held": probe.held, "failed": probe.failed}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="the twelve cases and a sample of the matrix")
    ap.add_argument("--keep-var", action="store_true", help="keep the demo's temporary var folder")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, keep_var=args.keep_var)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"tried {result['tried']}, held {result['held']}, failed {len(result['failed'])}")
        for f in result["failed"]:
            print(f"  FAILED {f['case']}: {f['detail']}")
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
