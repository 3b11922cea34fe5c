"""The websockets of live progress: authenticate, authorize, join the object's group, forward
what portal.core.live publishes. One subclass per kind of object (runs, experiment grids)."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer

from portal.core.api import DB_ID_MAX

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any websocket path no route matches (ws/runs/abc/): closed with 4404, not an error."""

    async def connect(self):
        await self.close(code=CLOSE_NOT_FOUND)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    url_kwarg = ""  # the URL route's id keyword

    def group(self, object_id: int) -> str:
        raise NotImplementedError

    def allowed(self, user, object_id: int) -> bool:
        """May `user` (authenticated) watch this object? Runs in a worker thread (database)."""
        raise NotImplementedError

    async def connect(self):
        raw = str(self.scope["url_route"]["kwargs"][self.url_kwarg])
        if not (raw.isascii() and raw.isdecimal() and len(raw) <= 19 and 1 <= int(raw) <= DB_ID_MAX):
            await self.close(code=CLOSE_NOT_FOUND)  # no object has this id
            return
        self.object_id = int(raw)
        user = self.scope.get("user")
        if not (user and user.is_authenticated and await database_sync_to_async(self.allowed)(user, self.object_id)):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group_name = self.group(self.object_id)
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "group_name", None):
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def live_event(self, message):
        await self.send_json({"event": message["event"], "data": message["data"]})
