"""A real etcd cluster of local processes for tests and benchmarks: see
:mod:`praxis_grpc.consensus.local_etcd` (it lives in the product, since
``praxis launch --backend etcd`` runs one, and the product never imports
``praxis_grpc.testing``)."""

from praxis_grpc.consensus.local_etcd import (
    EtcdCluster,
    EtcdClusterError,
    EtcdMember,
    etcd_cluster,
    find_etcd,
)

__all__ = ["EtcdCluster", "EtcdClusterError", "EtcdMember", "etcd_cluster", "find_etcd"]
