# syntax=docker/dockerfile:1
# slo-scaler image: a static (musl) binary on an empty base, running as a non-root user.
#   docker build -t slo-scaler:0.1.0 .
# Multi-arch: build per platform (docker buildx build --platform linux/amd64,linux/arm64);
# the builder runs on the target platform, so no cross toolchain is needed.

# Builder: the official Rust image on Alpine targets musl, so the binary links statically.
# 1.95: the toolchain the project builds with here (the locked AWS crates need 1.94.1 or later).
FROM rust:1.95-alpine AS builder
# C toolchain for ring and aws-lc-sys; CA bundle copied into the final image.
RUN apk add --no-cache musl-dev build-base cmake perl ca-certificates
WORKDIR /src
# Everything cargo may read (sources, proto, tests and benches named in Cargo.toml);
# .dockerignore keeps target/, .git/ and the deploy files out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin slo-scaler \
    && install -D -m 0755 target/release/slo-scaler /out/slo-scaler
# The only account the final image has: nonroot (65532), matching the chart's runAsUser.
RUN printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > /out/passwd \
    && printf 'nonroot:x:65532:\n' > /out/group

# Final: nothing but the binary, CA certificates (TLS to Prometheus, Tempo, AWS) and the user.
FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/passwd /etc/passwd
COPY --from=builder /out/group /etc/group
COPY --from=builder /out/slo-scaler /usr/local/bin/slo-scaler
USER 65532:65532
# gRPC (KEDA), admin HTTP (/metrics, /healthz, /readyz), OTLP gRPC, OTLP HTTP.
EXPOSE 6000 8080 4317 4318
ENTRYPOINT ["/usr/local/bin/slo-scaler"]
CMD ["serve"]
