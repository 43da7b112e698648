"""``praxis.v1.CardService``: serve the card directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from praxis_grpc._gen.praxis.v1 import card_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import card_service_pb2_grpc as pb_grpc
from praxis_grpc.api.errors import translate_errors
from praxis_grpc.directory import CardDirectory
from praxis_grpc.errors import NotFound, Unavailable, quote
from praxis_grpc.wire import card_to_proto

Context = grpc.aio.ServicerContext[Any, Any]


class CardService(pb_grpc.CardServiceServicer):
    """Serves cards; ``refresh_local`` is called first so the own card's load is live."""

    def __init__(self, directory: CardDirectory, refresh_local: Callable[[], object]) -> None:
        self._directory = directory
        self._refresh_local = refresh_local

    @translate_errors
    async def GetCard(self, request: pb.GetCardRequest, context: Context) -> pb.GetCardResponse:
        self._refresh_local()
        if not request.agent_id:
            return pb.GetCardResponse(card=card_to_proto(self._directory.local))
        card = self._directory.get(request.agent_id)
        if card is None:
            raise NotFound(f"no card for agent {quote(request.agent_id)}")
        return pb.GetCardResponse(card=card_to_proto(card))

    @translate_errors
    async def ListCards(
        self, request: pb.ListCardsRequest, context: Context
    ) -> pb.ListCardsResponse:
        self._refresh_local()
        cards = self._directory.cards(request.tool, list(request.tags))
        return pb.ListCardsResponse(cards=[card_to_proto(c) for c in cards])

    @translate_errors
    async def WatchCards(
        self, request: pb.WatchCardsRequest, context: Context
    ) -> AsyncIterator[pb.WatchCardsResponse]:
        self._refresh_local()
        try:
            async for event in self._directory.watch(request.tool):
                if event is None:
                    yield pb.WatchCardsResponse(type=pb.CARD_EVENT_TYPE_SYNCED)
                else:
                    yield pb.WatchCardsResponse(
                        type=event.type.value,  # type: ignore[arg-type]
                        card=card_to_proto(event.card),
                    )
        except OverflowError as exc:
            raise Unavailable(f"{exc}; watch again to resynchronise") from None
