"""Peer discovery and card transport: the libp2p host (trio) and its asyncio bridge."""
