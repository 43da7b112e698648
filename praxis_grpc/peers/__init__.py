"""The seam between nodes: every call one node makes to another goes through
:class:`~praxis_grpc.peers.base.PeerClient` (gRPC in
:mod:`praxis_grpc.peers.grpc`, in memory in :mod:`praxis_grpc.testing.memory_peers`),
and every such call is served by a :class:`~praxis_grpc.peers.base.PeerHandler`.
"""
