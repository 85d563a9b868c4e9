# The sidecar and the mock platforms, for docker-compose.yml. The filters are not built here:
# `./cxgate build` builds them on the host, and compose mounts them into the official Envoy image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cxgate-mocks -p cxgate-sidecar

FROM debian:bookworm-slim
# The sidecar calls the platforms over TLS (rustls, with the system's roots).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cxgate-mocks /src/target/release/cxgate-sidecar /usr/local/bin/
USER 65534:65534
