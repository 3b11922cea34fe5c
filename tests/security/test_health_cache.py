"""The health endpoint: anonymous callers see the overall status only and never make the
portal query the SuperLink; staff see the details, and however many ask at once, the SuperLink
is queried at most once per cache interval.

The "SuperLink" here is a real TCP listener that counts connections: the portal's check opens
one connection per query (a TLS handshake that this listener refuses, so the check answers
"down" at once)."""
import datetime
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.django_db


class CountingListener:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


def _self_signed_ca(path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def superlink(settings, tmp_path):
    listener = CountingListener()
    _self_signed_ca(tmp_path / "ca.crt")
    settings.FLOWER_PKI_DIR = str(tmp_path)
    settings.FLOWER_CONTROL_ADDRESS = listener.address
    yield listener
    listener.close()


def test_anonymous_sees_only_the_status_and_triggers_no_superlink_query(api, superlink, approved_node):
    from portal.nodes.services import heartbeat

    node, _ = approved_node
    heartbeat(node, {"status": "ok"})
    for _ in range(5):
        r = api().get("/api/health/")
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}
        assert node.name not in r.content.decode()
    assert superlink.connections == 0


@pytest.mark.parametrize("persona", ["clinician", "coordinator", "node_operator", "norole"])
def test_other_roles_see_only_the_status(api, personas, superlink, persona):
    assert api(personas[persona]).get("/api/health/").json() == {"status": "ok"}


def test_administrators_see_details(api, personas, superlink, approved_node):
    from portal.nodes.services import heartbeat

    node, _ = approved_node
    heartbeat(node, {"status": "ok"})
    body = api(personas["administrator"]).get("/api/health/").json()
    assert body["status"] == "ok" and body["database"]["status"] == "ok"
    assert body["nodes"]["online_nodes"] == [node.name]
    assert body["superlink"]["status"] == "down" and body["superlink"]["address"] == superlink.address


def test_staff_session_sees_details(client, personas, superlink):
    user = personas["norole"]
    user.is_staff = True
    user.save()
    client.force_login(user)
    assert "superlink" in client.get("/api/health/").json()


@pytest.mark.django_db(transaction=True)  # the callers' threads must see the committed token
def test_concurrent_callers_share_one_superlink_query_per_interval(api, personas, superlink, settings):
    settings.HEALTH_SUPERLINK_CACHE_S = 30.0
    admin = personas["administrator"]
    api(admin)  # its token, created before the threads start

    def ask(_):
        from django.db import connection

        try:
            return api(admin).get("/api/health/").json()["superlink"]["status"]
        finally:
            connection.close()  # each thread's own connection

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(ask, range(20)))
    assert answers == ["down"] * 20
    assert superlink.connections == 1


def test_the_superlink_is_asked_again_after_the_interval(api, personas, superlink, settings):
    import time

    settings.HEALTH_SUPERLINK_CACHE_S = 0.3
    admin = api(personas["administrator"])
    admin.get("/api/health/")
    admin.get("/api/health/")
    assert superlink.connections == 1
    time.sleep(0.4)
    body = admin.get("/api/health/").json()
    assert superlink.connections == 2 and body["superlink"]["checked_s_ago"] < 0.3


def test_anonymous_status_still_reports_degraded(api, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    r = api().get("/api/health/")
    assert r.status_code == 503 and r.json() == {"status": "degraded"}
