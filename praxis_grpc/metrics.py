"""Every Prometheus collector of a node, declared in one place.

Each :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`
so several nodes can live in one process (tests, ``praxis.testing``) without
sharing counters. Names use the ``praxis_`` namespace, ``_total`` counters and
``_seconds`` histograms.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

NAMESPACE = "praxis"

# Fast RPCs dominate; tasks may run for minutes.
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """The collectors of one node."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.node_info = Gauge(
            "node_info",
            "Constant 1, labelled with what this node is.",
            ["version", "agent", "ha_mode", "backend"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.tasks_total = Counter(
            "tasks",
            "Tasks that reached a state, by tool and state (a task counts once per state "
            "it passes through).",
            ["tool", "state"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.tasks_finished_total = Counter(
            "tasks_finished",
            "Tasks that reached their terminal state, once per task, by tool and outcome "
            "(completed, failed, canceled, rejected).",
            ["tool", "outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.task_duration_seconds = Histogram(
            "task_duration_seconds",
            "Execution time of tasks from WORKING to a terminal state.",
            ["tool"],
            buckets=_TASK_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        self.task_queue_depth = Gauge(
            "task_queue_depth",
            "Tasks accepted and waiting for a worker slot.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.task_queue_limit = Gauge(
            "task_queue_limit",
            "Tasks the queue holds at most (tasks.queue_limit); alerts compare the depth to it.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.tasks_in_flight = Gauge(
            "tasks_in_flight",
            "Tasks executing now.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.tasks_rejected_total = Counter(
            "tasks_rejected",
            "Submissions refused before acceptance, by reason.",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.grpc_server_requests_total = Counter(
            "grpc_server_requests",
            "Completed gRPC requests by service, method and status code.",
            ["service", "method", "code"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.grpc_server_request_duration_seconds = Histogram(
            "grpc_server_request_duration_seconds",
            "Duration of gRPC requests (whole stream for streaming RPCs).",
            ["service", "method"],
            buckets=_RPC_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        self.p2p_peers_connected = Gauge(
            "p2p_peers_connected",
            "libp2p peers connected now.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.p2p_connections = Gauge(
            "p2p_connections",
            "libp2p neighbours this node holds a connection to (bounded by p2p.max_peers;"
            " transient SWIM probe connections are not counted).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.p2p_relay_reservations = Gauge(
            "p2p_relay_reservations",
            "Circuit relays holding a reservation for this node (p2p.relays): the "
            "/p2p-circuit addresses its card advertises.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.p2p_reachability = Gauge(
            "p2p_reachability",
            "1 for this node's reachability as peers' dial-backs found it (unknown, "
            "public, private), or as p2p.reachability forces it.",
            ["state"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.p2p_holepunch_total = Counter(
            "p2p_holepunch",
            "Hole punching sessions (p2p.hole_punching) this node initiated, by outcome: "
            "direct (now directly connected), failed (the relayed connection is kept) or "
            "skipped (no observed address, or the peer does not punch).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.gossip_messages_total = Counter(
            "gossip_messages",
            "Mesh messages by kind (card, status) and direction (sent, received, dropped).",
            ["kind", "direction"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.gossip_repairs_total = Counter(
            "gossip_repairs",
            "Pubsub peer state py-libp2p would have left broken, by kind: subscriptions_kept "
            "(a stale stream of a peer failed while its current one is open) or stream_retried "
            "(opening the pubsub stream to a peer failed in its negotiation or hello).",
            ["kind"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.members = Gauge(
            "members",
            "SWIM members this node remembers, by state (alive, suspect, dead, left).",
            ["state"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.swim_probes_total = Counter(
            "swim_probes",
            "SWIM probes by outcome (ack, indirect_ack, suspect).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.swim_messages_total = Counter(
            "swim_messages",
            "SWIM messages by kind (ping, ack, ping_req, nack, gossip, push_pull, malformed) "
            "and direction (sent, received, dropped).",
            ["kind", "direction"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.cards_known = Gauge(
            "cards_known",
            "Agent cards in the registry, this node's own included.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.card_updates_total = Counter(
            "card_updates",
            "Peer cards accepted into the registry, by how they arrived.",
            ["source"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.cards_rejected_total = Counter(
            "cards_rejected",
            "Peer cards dropped, by reason (bad_signature, oversized, malformed, not_sender, "
            "expired, replayed, foreign_address, too_many_slots, endpoint_taken, no_certificate, "
            "untrusted_certificate, foreign_certificate, revoked_certificate).",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.admission_rejected_total = Counter(
            "admission_rejected",
            "Peers refused admission to the mesh and disconnected, by reason (no_certificate, "
            "malformed, untrusted, peer_id_mismatch, revoked, timeout).",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.peer_wrong_identity_total = Counter(
            "peer_wrong_identity",
            "Calls to another member refused because the server certificate at its "
            "address does not name the agent dialed (another member holds the address).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.peer_calls_refused_total = Counter(
            "peer_calls_refused",
            "Inbound peer-service calls and streams refused before reaching the service, "
            "by transport (grpc, libp2p) and reason (per_peer_limit, revoked).",
            ["transport", "reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.card_age_seconds = Histogram(
            "card_age_seconds",
            "Age of peer cards when they arrive (now minus the card's updated_at).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            namespace=NAMESPACE,
            registry=r,
        )
        self.route_decisions_total = Counter(
            "route_decisions",
            "Routing choices for submitted tasks, by tool and chosen agent name.",
            ["tool", "target"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.delegations_total = Counter(
            "delegations",
            "Delegation calls to other agents, by outcome (accepted, saturated, "
            "unavailable, refused, invalid, error).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.delegation_duration_seconds = Histogram(
            "delegation_duration_seconds",
            "Duration of delegation calls to other agents (until acceptance, or the "
            "result when the client waits).",
            buckets=(*_RPC_BUCKETS, 30, 60, 300),
            namespace=NAMESPACE,
            registry=r,
        )
        self.redispatches_total = Counter(
            "redispatches",
            "Delegated tasks sent to another agent after their owner was lost.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.delegated_tasks_following = Gauge(
            "delegated_tasks_following",
            "Tasks this node delegated and is following until they finish.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.consensus_is_leader = Gauge(
            "consensus_is_leader",
            "1 while this node is the active-passive coordinator (consensus leader).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.consensus_term = Gauge(
            "consensus_term",
            "The current consensus term (fencing token) as this node sees it.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.consensus_leader_changes_total = Counter(
            "consensus_leader_changes",
            "Changes of the consensus leader this node observed.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.consensus_commit_duration_seconds = Histogram(
            "consensus_commit_duration_seconds",
            "Time to commit a coordinator state change through consensus.",
            buckets=_RPC_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        self.forwarded_submissions_total = Counter(
            "forwarded_submissions",
            "Submissions a standby forwarded to the coordinator, by outcome (ok, error).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.consensus_suspicions_total = Counter(
            "consensus_suspicions",
            "Times this node found the coordinator's process gone (its gRPC port "
            "refused connections) and the backend ended its term early.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.role_switch_errors_total = Counter(
            "role_switch_errors",
            "Failures while taking over as coordinator or stepping down, by step "
            "(take_over, step_down, watch); each is logged and retried.",
            ["step"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.relays_abandoned_total = Counter(
            "relays_abandoned",
            "Task calls relayed to a coordinator that lost the leadership before "
            "answering, abandoned to be sent to the next one.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.background_task_crashes_total = Counter(
            "background_task_crashes",
            "Node background tasks that ended with an error, by task name; a crash "
            "of a critical one (the role switch) stops the node serving.",
            ["task"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.task_calls_held = Gauge(
            "task_calls_held",
            "Task calls waiting for a coordinator (an election or take-over is under "
            "way, or a relay went unanswered); see ha.hold_timeout.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.build = Info(
            "build",
            "Build information.",
            namespace=NAMESPACE,
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
