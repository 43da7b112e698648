# A praxis node. Build: docker build -t praxis-grpc .
# Run one role: docker run praxis-grpc node --config /etc/praxis/agent1.yaml
# (docker-compose.yml runs the five seed roles; deploy/k8s for Kubernetes.)
FROM python:3.11-slim AS build
# fastecdsa and coincurve (libp2p) may build from source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libgmp-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/praxis
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY praxis_grpc ./praxis_grpc
RUN /opt/praxis/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgmp10 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/praxis praxis
COPY --from=build /opt/praxis /opt/praxis
COPY tools /opt/praxis/contract-tools
COPY configs /etc/praxis
ENV PATH=/opt/praxis/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRAXIS_API__HOST=0.0.0.0 \
    PRAXIS_API__PORT=50051 \
    PRAXIS_METRICS__HOST=0.0.0.0 \
    PRAXIS_METRICS__PORT=9464 \
    PRAXIS_P2P__HOST=0.0.0.0 \
    PRAXIS_P2P__PORT=4001
# State (identity key, task store, raft log) lives under data_dir, which
# defaults to .praxis/<agent name> in the working directory.
USER 10001
WORKDIR /var/lib/praxis
VOLUME /var/lib/praxis
# gRPC, /metrics and the A2A card, libp2p, raft
EXPOSE 50051 9464 4001 7001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "praxis_grpc.container", "health", "127.0.0.1:50051"]
ENTRYPOINT ["praxis"]
CMD ["node", "--config", "/etc/praxis/orchestrator.yaml"]
