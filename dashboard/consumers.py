"""WebSocket /ws/spend/: live spend for a signed-in dashboard user.

The connection joins its organization's group (live.group_name); ingest
publishes each recorded batch there (live.on_events_recorded, through tracking.signals.events_recorded). Staff choose the
organization with `?org=<slug>`, like on the page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth.models import AbstractBaseUser
from django.db import close_old_connections

from budgets.models import Organization
from config.hotpath.errors import ApiError
from dashboard import access, live

# Close codes (4000-4999 are the application's): like HTTP 401 and 403.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _organization_for(user: AbstractBaseUser, requested: str | None) -> Organization:
    try:
        return access.organization_for(user, requested)
    finally:
        # database_sync_to_async's own clean-up runs outside the call's context
        # and was seen to leave this thread's connection open (CONN_MAX_AGE=0
        # means one connection per use, as in a request).
        close_old_connections()


class SpendConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        requested = (query.get("org") or [None])[0] or None
        try:
            org = await _organization_for(user, requested)
        except ApiError:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = live.group_name(org.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "org": org.slug})

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def spend_update(self, message: dict[str, Any]) -> None:
        await self.send_json(live.client_message(message))
