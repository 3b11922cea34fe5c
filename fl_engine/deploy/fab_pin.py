"""A hospital node runs only FedHaem's installed ClientApp, whatever FAB a manager sends.

Flower ships each run's app as a FAB (a zip with pyproject.toml) from the SuperLink to every
SuperNode; the ClientApp process installs it, puts it on sys.path and loads the component its
pyproject.toml names. A manager (or whoever controls its SuperLink) could thus make a hospital
execute code of its choosing: a FAB naming its own module, or carrying a module that shadows
FedHaem's. For a node serving several managers under one account, that code could read another
manager's registry. `check_fab` refuses any FAB whose ClientApp is not
`fl_engine.federation.client_app:app` or that carries code (Python sources, bytecode,
extension modules, .pth files); the prefork launcher (fl_engine.deploy.prefork) checks every
task's FAB with it before Flower installs it, so the refusal reaches the run as the node's error.
"""
from __future__ import annotations

import io
import tomllib
import zipfile

PINNED_CLIENTAPP = "fl_engine.federation.client_app:app"
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth", ".pyx", ".pyi")


class FabRefused(ValueError):
    """The run's FAB would run code other than FedHaem's installed ClientApp."""


def check_fab(content: bytes) -> None:
    """Raise FabRefused naming what is wrong unless the FAB only configures FedHaem's ClientApp."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as err:
        raise FabRefused(f"the run's FAB is not a zip archive: {err}") from None
    with zf:
        names = zf.namelist()
        code = sorted(n for n in names if n.lower().endswith(CODE_SUFFIXES))
        if code:
            raise FabRefused(f"the run's FAB carries code ({', '.join(code[:5])}); this node runs only "
                             f"FedHaem's installed ClientApp ({PINNED_CLIENTAPP})")
        if "pyproject.toml" not in names:
            raise FabRefused("the run's FAB has no pyproject.toml")
        try:
            project = tomllib.loads(zf.read("pyproject.toml").decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise FabRefused(f"the run's FAB pyproject.toml is unreadable: {err}") from None
    component = (((project.get("tool") or {}).get("flwr") or {}).get("app") or {}).get("components", {}) \
        .get("clientapp")
    if component != PINNED_CLIENTAPP:
        raise FabRefused(f"the run's FAB names ClientApp {component!r}; this node runs only {PINNED_CLIENTAPP}")


def pin_clientapp_fab() -> None:
    """In a ClientApp process (a prefork child), before Flower's run_clientapp: check the FAB
    Flower is about to install. Wraps the one name `run_clientapp` looks up in its own module;
    Flower's install itself runs unchanged after the check."""
    import flwr.supernode.runtime.run_clientapp as rc

    install = rc.install_from_fab
    if getattr(install, "_fedhaem_pinned", False):
        return

    def checked_install(fab_file, *args, **kwargs):
        content = fab_file if isinstance(fab_file, bytes) else fab_file.read_bytes()
        check_fab(content)
        return install(fab_file, *args, **kwargs)

    checked_install._fedhaem_pinned = True
    rc.install_from_fab = checked_install
