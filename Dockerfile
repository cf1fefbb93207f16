# airlock's container image: the release binary on a distroless base.
#
#   docker build -t registry.local/airlock:0.1.0 .
#   docker push registry.local/airlock:0.1.0
#   helm install airlock helm/airlock --set image.repository=registry.local/airlock ...
#
# (podman build and buildah bud take the same arguments.) The image has no
# shell and no package manager; it runs as the numeric user 65532, and
# writes only to the volumes mounted at /var/lib/airlock (state) and the drop
# directory. Its root file system can be mounted read-only.

# Build stage: the toolchain of rust-version in Cargo.toml or newer, on the
# same Debian release as the runtime so glibc matches.
FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, so that changing airlock's code does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && strip target/release/airlock

# Runtime stage: glibc, libgcc and CA certificates, nothing else. Pinned by
# digest so a rebuild uses the bytes that were reviewed; refresh the digest
# deliberately (crane digest gcr.io/distroless/cc-debian12:nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/airlock /usr/local/bin/airlock
COPY config/airlock.yaml /etc/airlock/airlock.yaml
USER 65532:65532
EXPOSE 9090
VOLUME ["/var/lib/airlock"]
ENTRYPOINT ["/usr/local/bin/airlock"]
CMD ["watch", "--config", "/etc/airlock/airlock.yaml"]
