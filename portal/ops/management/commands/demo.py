"""`manage.py demo` (what `make demo` runs): migrate, seed, start every part on loopback, restart a
part that dies (portal.ops.supervisor), and stop them all on Ctrl-C or SIGTERM. Embedded
defaults: SQLite, embedded Redis (persistent), the development identity provider."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal.devidp.people import PEOPLE
from portal.devidp.runner import DevIdentityProvider
from portal.ops import federation_demo
from portal.ops.embedded import redis_command, redis_ready
from portal.ops.supervisor import Service, Supervisor, port_open


class Command(BaseCommand):
    help = "Run the FedHaem demo: portal, worker, identity provider, federation. Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="Portal port (127.0.0.1)")
        parser.add_argument("--no-federation", action="store_true",
                            help="Do not start the SuperLink and the demo worker nodes")

    def handle(self, *args, port: int, no_federation: bool, **opts):
        def _terminate(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
        bin_dir = str(Path(sys.executable).parent)
        var = Path(settings.VAR_DIR)
        sup = Supervisor(var / "logs", echo=self.stdout.write)
        try:
            if settings.EMBEDDED_REDIS:
                redis_port = settings.EMBEDDED_REDIS_PORT
                if port_open(redis_port):  # one already runs (another demo, a test session): reuse it
                    self.stdout.write(f"  embedded Redis on 127.0.0.1:{redis_port} (already running)")
                else:
                    sup.start(Service("redis", redis_command(redis_port, var), ready=lambda: redis_ready(redis_port),
                                      ready_timeout=20))
            call_command("migrate", verbosity=0)
            # the portal serves CSS, JS and plotly.js with WhiteNoise from STATIC_ROOT (var/static)
            call_command("collectstatic", interactive=False, verbosity=0)
            base = f"http://127.0.0.1:{port}"
            idp = None
            if settings.OIDC_ISSUER == f"http://127.0.0.1:{settings.DEV_IDP_PORT}/o":
                idp = DevIdentityProvider(var, settings.DEV_IDP_PORT)
                idp.setup(var / "secrets" / "oidc_client_secret",
                          [f"{base}/oidc/callback/", f"http://localhost:{port}/oidc/callback/"], [f"{base}/"])
                idp.start()
                sup.adopt(Service("identity-provider", [], proc=idp.proc, log_path=idp.log_path))
                self.stdout.write(f"  development identity provider on {idp.issuer}")
            call_command("seed_demo", verbosity=0, federation=not no_federation)
            env = {"PATH": f"{bin_dir}:" + os.environ.get("PATH", ""),
                   "PORTAL_BASE_URL": base}
            sup.start(Service("portal", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                         "portal.asgi:application"], env=env, ready=lambda: port_open(port)))
            sup.start(Service("worker", [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "celery",
                                         "-n", "short@%h", "--loglevel", "INFO", "--concurrency", "2",
                                         "--pool", "threads"], env=env))
            # Conclusions (MLflow registration) in their own process: a slow one never delays the
            # reconciler or the start of the next run.
            sup.start(Service("worker-conclusions", [sys.executable, "-m", "celery", "-A", "portal", "worker",
                                                     "-Q", settings.CONCLUSIONS_QUEUE, "-n", "conclusions@%h",
                                                     "--loglevel", "INFO", "--concurrency", "2",
                                                     "--pool", "threads"], env=env))
            # Experiment grids (computed here, minutes long): one at a time, in a third process.
            sup.start(Service("worker-grids", [sys.executable, "-m", "celery", "-A", "portal", "worker",
                                               "-Q", settings.GRIDS_QUEUE, "-n", "grids@%h", "--loglevel", "INFO",
                                               "--concurrency", "1", "--pool", "threads"], env=env))
            # Periodic tasks (the run reconciler): its own service, so a crashed worker does not
            # take the schedule with it.
            sup.start(Service("beat", [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO",
                                       "--schedule", str(var / "celerybeat-schedule")], env=env))
            if not no_federation:
                federation_demo.start(sup, env, base, self.stdout.write)
            self._banner(base, idp)
            sup.watch()
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        finally:
            sup.stop_all()

    def _banner(self, base: str, idp) -> None:
        self.stdout.write(self.style.SUCCESS(f"\nFedHaem is running: {base}/"))
        self.stdout.write(f"  API docs {base}/api/docs/   health {base}/api/health/")
        if idp is not None:
            self.stdout.write("  sign in as: " + ", ".join(p[0] for p in PEOPLE)
                              + f"  (password in {idp.password_file}: {idp.password})")
        self.stdout.write("  API token for scripts: .venv/bin/python manage.py api_token coordinator")
        self.stdout.write("Ctrl-C stops everything.")
