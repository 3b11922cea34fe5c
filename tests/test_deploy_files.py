"""The production compose file and Keycloak realm export, linted (no Docker engine runs here)."""
import json
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def _compose():
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def test_compose_services_and_networks():
    c = _compose()
    assert {"postgres", "redis", "keycloak", "portal", "worker", "worker-conclusions", "worker-grids", "beat", "superlink", "mlflow"} <= set(c["services"])
    assert c["networks"]["internal"]["internal"] is True
    for name, svc in c["services"].items():
        for net in svc.get("networks", []):
            assert net in c["networks"], f"{name} uses undeclared network {net}"
        for secret in svc.get("secrets", []):
            assert secret in c["secrets"], f"{name} uses undeclared secret {secret}"


def test_flower_control_api_is_never_published():
    """The SuperLink's single port carries the unauthenticated Control API: the SuperLink
    publishes nothing and sits on the internal network; the proxy forwards only Fleet."""
    services = _compose()["services"]
    assert "ports" not in services["superlink"]
    assert services["superlink"]["networks"] == ["internal"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"proxy"}
    conf = (DOCKER / "nginx.conf").read_text()
    grpc_locations = [line.split()[1] for line in conf.splitlines() if line.strip().startswith("location")
                      and "grpc" in conf.split(line, 1)[1].split("}", 1)[0]]
    assert grpc_locations == ["/flwr.proto.Fleet/"]
    assert "location / { return 404; }" in conf


def test_secrets_come_from_files_only():
    for name, svc in _compose()["services"].items():
        for key in (svc.get("environment") or {}):
            if any(w in key.upper() for w in ("PASSWORD", "SECRET")):
                assert key.endswith("_FILE"), f"{name}: {key} must be read from a file"


def test_keycloak_realm_maps_roles_and_organisation():
    realm = json.loads((DOCKER / "keycloak" / "fedhaem-realm.json").read_text())
    assert {r["name"] for r in realm["roles"]["realm"]} == {
        "clinician", "coordinator", "data_manager", "node_operator", "administrator"}
    client = realm["clients"][0]
    assert client["clientId"] == "fedhaem-portal" and client["publicClient"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    claims = {m["config"]["claim.name"] for m in client["protocolMappers"]}
    assert claims == {"roles", "organisation"}


def test_broker_persists_and_periodic_tasks_run():
    """A queued Celery task survives a Redis restart; one beat runs the periodic tasks."""
    c = _compose()
    redis = c["services"]["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    volume = next(v for v in redis["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in c["volumes"]
    beat = c["services"]["beat"]
    assert beat["command"][:4] == ["celery", "-A", "portal", "beat"] and beat["restart"] == "unless-stopped"
    assert beat["networks"] == ["internal"]


def test_the_superlink_shares_no_disk_with_the_portal():
    """The run lifecycle needs no shared disk: the SuperLink's container has its own volume,
    signs run events with a key it shares with the portal, and posts them to the portal."""
    c = _compose()
    superlink, portal = c["services"]["superlink"], c["services"]["portal"]
    assert superlink["volumes"] == ["superlink-state:/var/lib/superlink"]
    assert not set(superlink["volumes"]) & set(portal.get("volumes", []))
    assert "run_events_key" in superlink["secrets"] and "run_events_key" in portal["secrets"]
    assert superlink["environment"]["FEDHAEM_RUN_EVENTS_KEY_FILE"] == "/run/secrets/run_events_key"
    assert portal["environment"]["RUN_EVENTS_KEY_FILE"] == "/run/secrets/run_events_key"
    assert portal["environment"]["RUN_EVENTS_BASE_URL"] == "http://portal:8000"
    cmd = superlink["command"]
    assert cmd[:4] == ["python", "-m", "fl_engine.deploy.flower_tuning", "superlink"]
    assert all(cmd[cmd.index(flag) + 1].startswith("/run/secrets/")
               for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"))
