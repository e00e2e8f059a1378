# syntax=docker/dockerfile:1.7
# Gatehouse: multi-stage build, slim non-root runtime.
#   docker build -t gatehouse:dev .
#   docker run --rm -p 4020:4020 -v $PWD/gatehouse.toml:/etc/gatehouse/gatehouse.toml:ro gatehouse:dev
# Migrations and the OpenAPI document are compiled into the binary; risk rules are read from
# /etc/gatehouse/risk-rules (mount your own, or use the pack baked in below).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
# Only what the binary needs (tests, contracts and compat harness stay out; see .dockerignore).
COPY Cargo.toml Cargo.lock build.rs clippy.toml ./
COPY src ./src
COPY migrations ./migrations
COPY openapi ./openapi
ARG CARGO_FEATURES=""
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gatehouse ${CARGO_FEATURES:+--features $CARGO_FEATURES} \
 && install -D -m 0755 target/release/gatehouse /out/gatehouse
# The rule pack, if the checkout has one (the glob lets the build work without it; Cargo.toml
# is a harmless second source so COPY never sees an empty source list).
COPY Cargo.toml risk-rule[s] /out/risk-rules/
RUN rm /out/risk-rules/Cargo.toml

FROM debian:${DEBIAN}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gatehouse \
 && useradd --system --uid 10001 --gid gatehouse --home-dir /var/lib/gatehouse --create-home \
      --shell /usr/sbin/nologin gatehouse
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
COPY --from=build --chown=root:root /out/risk-rules /etc/gatehouse/risk-rules
ENV GATEHOUSE_LISTEN=0.0.0.0:4020 \
    GATEHOUSE_RULES_DIR=/etc/gatehouse/risk-rules \
    GATEHOUSE_DATABASE_URL=sqlite:///var/lib/gatehouse/gatehouse.db \
    GATEHOUSE_LOG_FORMAT=json
WORKDIR /var/lib/gatehouse
USER 10001:10001
EXPOSE 4020 9464
VOLUME ["/var/lib/gatehouse"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
