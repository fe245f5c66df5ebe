# Build: docker build -t certpilot .
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY tests/apiserver tests/apiserver
# The image runs in a cluster: it leaves out `certpilot sandbox` and its API server.
RUN cargo build --release --locked --no-default-features --bin certpilot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/certpilot /usr/local/bin/certpilot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/certpilot"]
CMD ["controller"]
