# The service's image: built with the locked dependencies, run as a non-root
# user on a small base that holds glibc and libgcc and little else.
#   docker build -t rust-web-prometheus-example:0.1.0 .
#   docker run --rm -p 8080:8080 rust-web-prometheus-example:0.1.0
# compose.yaml builds and runs it with Prometheus and Grafana; the manifests
# in deploy/kubernetes/ run it on Kubernetes.

# Bookworm, like the runtime base below: the binary links against glibc and
# must not need a newer one than the runtime has.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# .dockerignore lets in only what the build reads.
COPY . .
# The commit for the build-info metric: the context holds no .git for
# build.rs to ask, so pass it with
#   docker build --build-arg BUILD_REVISION=$(git rev-parse HEAD) .
# Without it the revision is "unknown".
ARG BUILD_REVISION
# The caches keep the registry and the compiled dependencies between builds;
# the binary is copied out because the target cache is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/rust-web-prometheus-example /rust-web-prometheus-example

# Distroless: no shell, no package manager, a `nonroot` user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /rust-web-prometheus-example /usr/local/bin/rust-web-prometheus-example
USER 65532:65532
# The service listens on 0.0.0.0:8080 by default, which is what a container
# needs: 127.0.0.1 would be unreachable from outside it.
EXPOSE 8080
# What the service drains and shuts down on (the default, said out loud).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rust-web-prometheus-example"]
