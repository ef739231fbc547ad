# ferroturn in a container. The relay port range (49152-65535/udp by default) is too
# wide to publish port by port, so run it with host networking:
#
#   docker build -t ferroturn .
#   docker run -d --name ferroturn --network host \
#     -v /etc/ferroturn/turnserver.toml:/etc/ferroturn/turnserver.toml:ro ferroturn
#
# The image's own /etc/ferroturn/turnserver.toml is turnserver.toml.example (a local
# trial on 127.0.0.1 with a development secret): mount your configuration over it,
# readable by the container's user, uid/gid 10001 (`chgrp 10001 FILE; chmod 0640 FILE`).
# `docker kill -s HUP ferroturn` reloads the configuration (credentials, peer policy,
# quotas, caps, lifetimes, log level, TLS certificate; listeners, ports and relay
# addresses need a restart); `docker stop` shuts down.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ferroturn \
    && install -m 0755 target/release/ferroturn /usr/local/bin/ferroturn

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/ferroturn /usr/bin/ferroturn
COPY turnserver.toml.example /etc/ferroturn/turnserver.toml
# A non-root user; the file capability lets it bind ports below 1024 (turns: on 443),
# which host networking does not allow unprivileged users otherwise.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_bind_service=+ep /usr/bin/ferroturn \
    && apt-get purge -y --auto-remove libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ferroturn \
    && useradd --system --uid 10001 --gid ferroturn --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ferroturn \
    && chown root:ferroturn /etc/ferroturn/turnserver.toml \
    && chmod 0640 /etc/ferroturn/turnserver.toml
USER ferroturn
# STUN/TURN over UDP and TCP, TURN over TLS (TCP) and DTLS (UDP), and the relay range
# (the defaults).
EXPOSE 3478/udp 3478/tcp 5349/tcp 5349/udp 49152-65535/udp
ENTRYPOINT ["/usr/bin/ferroturn", "--config", "/etc/ferroturn/turnserver.toml"]
