#!/usr/bin/env bash
# Builds examples/example.zst + example.sig.bin, the small signed bundle the
# README's Quick start imports, with nothing but standard tools: it writes an
# OCI image layout by hand (one image, one gzip layer), tars it the way
# containerd does (sorted by name, so blobs come before index.json),
# compresses it with zstd and signs it the way Artifact Studio does:
#   openssl dgst -sha256 -sign KEY -out example.sig.bin example.zst
#
# A fresh ECDSA P-256 key pair is generated on every run; only the public key
# (example-public-key.pem) is kept. The private key never leaves the temporary
# directory.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

layout="$work/layout"
mkdir -p "$layout/blobs/sha256" "$work/rootfs/etc"

put_blob() { # file -> prints "sha256:<hex> <size>"
    local hex size
    hex="$(sha256sum "$1" | cut -d' ' -f1)"
    size="$(stat -c %s "$1")"
    cp "$1" "$layout/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

echo "airlock example image" > "$work/rootfs/etc/airlock-example"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -C "$work/rootfs" -cf "$work/layer.tar" etc
diff_id="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
read -r layer_digest layer_size < <(put_blob "$work/layer.tar.gz")

printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$diff_id" > "$work/config.json"
read -r config_digest config_size < <(put_blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" > "$work/manifest.json"
read -r manifest_digest manifest_size < <(put_blob "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"quay.io/airlock/example:1.0","org.opencontainers.image.ref.name":"1.0"},"platform":{"architecture":"amd64","os":"linux"}}]}' \
    "$manifest_digest" "$manifest_size" > "$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -C "$layout" -cf "$work/example.tar" .
zstd -q -19 -f "$work/example.tar" -o "$here/example.zst"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null
openssl pkey -in "$work/key.pem" -pubout -out "$here/example-public-key.pem"
openssl dgst -sha256 -sign "$work/key.pem" -out "$here/example.sig.bin" "$here/example.zst"
openssl dgst -sha256 -verify "$here/example-public-key.pem" \
    -signature "$here/example.sig.bin" "$here/example.zst"
