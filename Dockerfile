# syntax=docker/dockerfile:1
# vitte: build with `docker build -t vitte .`; run with compose.yaml or deploy/k8s/.
# Configuration: config/default.toml + config/production.toml (VITTE_ENV), overridden by
# environment variables named after section and key, e.g. VITTE__LLM__API_KEY for [llm]
# api_key (secrets always come that way).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, against stub sources, so they are rebuilt only when the manifests change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY loadgen/Cargo.toml loadgen/Cargo.toml
RUN mkdir -p src actors/src loadgen/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && touch actors/src/lib.rs loadgen/src/lib.rs && echo 'fn main() {}' > loadgen/src/main.rs \
    && cargo build --release --locked -p vitte --bin vitte \
    && rm -rf src actors/src loadgen/src
# Then the sources (migrations are embedded in the binary).
COPY src src
COPY actors/src actors/src
COPY loadgen/src loadgen/src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs actors/src/lib.rs \
    && cargo build --release --locked -p vitte --bin vitte

FROM debian:bookworm-slim AS runtime
# ca-certificates is not pinned: it must follow Debian's updates of the trusted roots.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin vitte
WORKDIR /app
COPY --from=build /src/target/release/vitte /usr/local/bin/vitte
COPY config/default.toml config/production.toml config/safety.toml config/catalogue.toml config/
COPY personas personas
RUN mkdir -p /app/data && chown vitte /app/data
USER 10001
ENV VITTE_CONFIG_DIR=/app/config \
    VITTE_ENV=production \
    VITTE__PERSONAS__DIR=/app/personas \
    VITTE__SAFETY__FILE=/app/config/safety.toml \
    VITTE__PAYMENTS__CATALOGUE=/app/config/catalogue.toml
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["vitte", "probe", "--path", "/health/live"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["vitte"]
CMD ["serve"]
