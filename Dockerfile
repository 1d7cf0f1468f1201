# syntax=docker/dockerfile:1
#
# Static image of the sidecar-operator binary: a musl build in the official Rust image, copied
# into distroless/static (no shell, no libc, CA certificates and /etc/passwd included), run as
# the unprivileged user 65532 ("nonroot"). deploy/30-deployment.yaml expects it as
# ghcr.io/sidecar-operator/sidecar-operator:<version>.
#
#   docker build -t ghcr.io/sidecar-operator/sidecar-operator:0.1.0 .
#
# NOT built by the test suite: the test machines have no Docker engine. `make test` runs the
# same binary, built by cargo, against the local control plane instead.

FROM rust:1 AS build
# ring (rustls) compiles C code, so the musl target needs the musl C toolchain.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sidecar-operator --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/sidecar-operator /sidecar-operator

FROM gcr.io/distroless/static:nonroot
COPY --from=build /sidecar-operator /sidecar-operator
USER 65532:65532
ENTRYPOINT ["/sidecar-operator"]
CMD ["run"]
