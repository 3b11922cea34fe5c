"""Websocket for live run progress: authenticate, authorize, forward."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal.core.live import run_group


class RunConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await self._allowed():
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(run_group(self.run_id), self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(run_group(self.run_id), self.channel_name)

    async def run_event(self, message):
        await self.send_json({"event": message["event"], "data": message["data"]})

    @database_sync_to_async
    def _allowed(self) -> bool:
        from portal.studies.selectors import runs_visible_to

        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.has_perm("studies.view_run")):
            return False
        return runs_visible_to(user).filter(pk=self.run_id).exists()
