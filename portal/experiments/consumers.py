"""Websocket for a running experiment grid (status, progress lines)."""
from portal.core.consumers import LiveConsumer
from portal.core.live import grid_group
from portal.experiments.selectors import VIEW_PERM, grids_visible_to


class GridConsumer(LiveConsumer):
    url_kwarg = "grid_id"

    def group(self, object_id: int) -> str:
        return grid_group(object_id)

    def allowed(self, user, object_id: int) -> bool:
        return user.has_perm(VIEW_PERM) and grids_visible_to(user).filter(pk=object_id).exists()
