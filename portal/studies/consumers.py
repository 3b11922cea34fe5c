"""Websocket for live run progress (rounds, status)."""
from portal.core.consumers import LiveConsumer
from portal.core.live import run_group
from portal.studies.selectors import runs_visible_to


class RunConsumer(LiveConsumer):
    url_kwarg = "run_id"

    def group(self, object_id: int) -> str:
        return run_group(object_id)

    def allowed(self, user, object_id: int) -> bool:
        return user.has_perm("studies.view_run") and runs_visible_to(user).filter(pk=object_id).exists()
