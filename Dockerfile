# Build: docker build -t pushgate .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pushgate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 pushgate && mkdir -p /var/lib/pushgate && chown pushgate /var/lib/pushgate
COPY --from=build /src/target/release/pushgate /usr/local/bin/pushgate
USER pushgate
VOLUME /var/lib/pushgate
EXPOSE 8443 9900
ENTRYPOINT ["pushgate"]
CMD ["run", "-c", "/etc/pushgate/pushgate.yaml"]
