"""What the two warm launchers share (the nodes' ClientApp launcher, fl_engine.deploy.prefork,
and the manager's ServerApp launcher, fl_engine.deploy.serverapp_prefork): is a parent still
alive, and reaping the children forked for tasks. Standard library only: the lean supervisor
imports it without Flower."""
from __future__ import annotations

import logging
import os


def alive(pid: int) -> bool:
    """True while process `pid` runs; a zombie (dead, not reaped by its parent yet) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def reap(children: set[int], what: str, log: logging.Logger, quiet_success: bool = False) -> None:
    """Collect the exit of every finished child in `children` (removed from the set), logging
    each exit code ("<what> child <pid> exited with code <n>"; a 0 at INFO unless `quiet_success`)."""
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            children.discard(pid)
            continue
        if done:
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if code:
                log.warning("%s child %d exited with code %d", what, pid, code)
            elif not quiet_success:
                log.info("%s child %d exited with code %d", what, pid, code)


# How long a launcher's request may keep retrying before it returns to its loop: there it checks
# that its parent still lives. Flower's own retry invoker retries a refused connection forever,
# so a launcher whose SuperNode (or SuperLink) was killed stayed behind with its warm memory.
RETRY_WITHIN_S = 30.0


def bounded_retry_invoker(max_time_s: float = RETRY_WITHIN_S):
    """Flower's HTTP retry invoker for a Runtime API client, giving up after `max_time_s`."""
    from flwr.supercore.retry import make_simple_http_retry_invoker

    invoker = make_simple_http_retry_invoker()
    invoker.max_time = max_time_s
    return invoker
