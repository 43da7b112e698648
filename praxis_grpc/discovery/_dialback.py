"""Reachability by dial-back (AutoNAT-like), over ``/praxis/dialback/1.0.0``. Trio thread only.

A node asks up to :data:`_ASKED` directly connected peers to dial it back.
Each peer answers from what it sees: it dials only the advertised addresses
whose IP is the one the request came from (so no node can be made to dial a
third party), on a fresh TCP connection (an existing libp2p connection would
prove nothing), and answers ``reachable``, ``unreachable`` or, when no
advertised address carries the observed IP (the node is behind NAT: peers see
another address than the one it listens on), ``unreachable`` too. The node
is *public* once any peer reached it, *private* when peers answered and none
did, *unknown* before any answer.

py-libp2p 0.8.1's AutoNAT v1 service is not used: its dial-back goes through
``host.connect``, which returns the connection the asking peer already holds,
so every node that asks is judged public.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.utils.varint import read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from praxis_grpc.discovery._admission import StreamHandler
from praxis_grpc.discovery._peer_stream import close_stream, write_frame
from praxis_grpc.discovery._wire import abort

__all__ = ["DIALBACK_PROTOCOL", "Reachability"]

log = logging.getLogger("praxis_grpc.discovery")

DIALBACK_PROTOCOL = TProtocol("/praxis/dialback/1.0.0")
_ASKED = 3
_MAX_ADDRS = 8
_MAX_SERVING = 8
"""Dial-backs served at once (one per asking peer): more are refused."""
_MAX_FRAME = 4096
_DIAL_TIMEOUT = 3.0
_ASK_TIMEOUT = 10.0
_FIRST_CHECK = 1.0
_RECHECK = 60.0

STATES = ("unknown", "public", "private")


class Reachability:
    """Serves dial-backs and learns this host's own reachability.

    ``on_state`` (trio thread, must not block) gets "public", "private" or
    "unknown" whenever the verdict changes.
    """

    def __init__(
        self,
        host: IHost,
        on_state: Callable[[str], None],
        gate: Callable[[StreamHandler], StreamHandler] = lambda h: h,
    ) -> None:
        """``gate`` wraps the handler (admission: dial back members only)."""
        self._host = host
        self._on_state = on_state
        self.state = "unknown"
        self._serving: set[ID] = set()
        host.set_stream_handler(DIALBACK_PROTOCOL, gate(self._serve))

    async def run(self, own_addrs: Callable[[], list[str]]) -> None:
        """Check now and then every minute (a minute after the last peer answered)."""
        await trio.sleep(_FIRST_CHECK)
        while True:
            verdicts = await self._ask(own_addrs())
            if verdicts:
                self._set("public" if any(verdicts) else "private")
            await trio.sleep(_RECHECK if verdicts else _FIRST_CHECK * 2)

    def _set(self, state: str) -> None:
        if state != self.state:
            log.info("reachability: %s (dial-back by peers)", state)
            self.state = state
            self._on_state(state)

    async def _ask(self, addrs: list[str]) -> list[bool]:
        tcp = [a for a in addrs if "/tcp/" in a and "/p2p-circuit" not in a][:_MAX_ADDRS]
        network = self._host.get_network()
        peers = [
            peer_id
            for peer_id, conns in list(network.connections.items())
            if any(not _relayed(conn) for conn in conns)
        ][:_ASKED]
        verdicts: list[bool] = []
        for peer_id in peers:
            try:
                with trio.fail_after(_ASK_TIMEOUT):
                    stream = await self._host.new_stream(peer_id, [DIALBACK_PROTOCOL])
                    try:
                        await write_frame(stream, _json({"addrs": tcp}))
                        frame = await read_varint_prefixed_bytes_limited(stream, _MAX_FRAME)
                        answer = json.loads(frame)
                        await close_stream(stream)
                    except BaseException:
                        await abort(stream)
                        raise
            except Exception as exc:
                log.debug("dial-back by %s failed: %r", peer_id, exc)
                continue
            verdicts.append(answer.get("reachable") is True)
        return verdicts

    async def _serve(self, stream: INetStream) -> None:
        # Bounded: each dial-back costs up to _MAX_ADDRS outgoing dials, so a
        # peer gets one at a time and all peers together _MAX_SERVING.
        peer = stream.muxed_conn.peer_id
        if peer in self._serving or len(self._serving) >= _MAX_SERVING:
            log.debug("dial-back asked by %s refused (busy)", peer)
            await abort(stream)
            return
        self._serving.add(peer)
        try:
            with trio.fail_after(_ASK_TIMEOUT):
                request = json.loads(await read_varint_prefixed_bytes_limited(stream, _MAX_FRAME))
                remote = stream.get_remote_address()
                observed = remote[0] if remote else ""
                reachable = await _dial_any(request.get("addrs", [])[:_MAX_ADDRS], observed)
                await write_frame(stream, _json({"reachable": reachable}))
                await close_stream(stream)
        except Exception as exc:
            log.debug("serving a dial-back failed: %r", exc)
            await abort(stream)
        finally:
            self._serving.discard(peer)


def _relayed(conn: object) -> bool:
    """A relayed connection (its far end is the relay, not the peer)."""
    get_addrs = getattr(conn, "get_transport_addresses", None)
    addrs = get_addrs() if callable(get_addrs) else []
    return any("/p2p-circuit" in str(a) for a in addrs or [])


async def _dial_any(addrs: list[object], observed: str) -> bool:
    """Whether a fresh TCP connection reaches one of ``addrs`` on the observed IP."""
    for addr in addrs:
        try:
            maddr = Multiaddr(str(addr))
            host = _ip(maddr)
            port = int(maddr.value_for_protocol("tcp"))
        except Exception:  # the parsers raise many types; all mean "not an address"
            log.debug("dial-back address %r is not usable", addr)
            continue
        if not observed or host != observed:
            continue  # only the address the request came from: no third parties
        with trio.move_on_after(_DIAL_TIMEOUT):
            try:
                connection = await trio.open_tcp_stream(host, port)
            except OSError:
                continue
            await connection.aclose()
            return True
    return False


def _json(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode()


def _ip(maddr: Multiaddr) -> str:
    names = {protocol.name for protocol in maddr.protocols()}
    family = next((f for f in ("ip4", "ip6") if f in names), "")
    return str(maddr.value_for_protocol(family)) if family else ""
