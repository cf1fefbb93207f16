"""Sigstore bundles for a bundle file, made without airlock's code.

A test stands up its own Sigstore: a CA (a P-384 root and a P-256
intermediate) in place of Fulcio, a log key in place of Rekor with a Merkle
tree of a few entries, a checkpoint signed as a note and a signed entry
timestamp, and a trusted_root.json naming them. It then writes one Sigstore
bundle per case for the file given, each as `cosign sign-blob --bundle` and
the Sigstore clients lay it out (v0.1 with x509CertificateChain, v0.3 with
certificate), with the Python `cryptography` package only.

    python3 sigstore_fixture.py OUT_DIR BUNDLE_FILE IDENTITY ISSUER

writes OUT_DIR/trusted_root.json (and the variants trusted_root-late-ca.json
and trusted_root-late-log.json, whose CA or log key becomes valid only after
the entries were logged), OUT_DIR/key.pub.pem (the key of the key-based
case) and OUT_DIR/<case>.sigstore.json for every case below.
"""

import base64
import datetime
import hashlib
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

FULCIO_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
FULCIO_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
ORIGIN = "rekor.test - 1"

out_dir, bundle_file, identity, issuer = sys.argv[1:5]
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
integrated_time = int(now.timestamp()) - 60


def b64(data):
    return base64.b64encode(data).decode()


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def spki(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def utf8_string(text):
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def ca_cert(subject, key, issuer_name, issuer_key, algorithm):
    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, algorithm)
    )


def leaf_cert(key, ca, ca_key, not_before, not_after, issuer_ext=FULCIO_ISSUER_V2,
              code_signing=True):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=True)
    )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    value = utf8_string(issuer) if issuer_ext == FULCIO_ISSUER_V2 else issuer.encode()
    builder = builder.add_extension(x509.UnrecognizedExtension(issuer_ext, value), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def leaf_hash(body):
    return hashlib.sha256(b"\x00" + body).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_hash(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def audit_path(m, leaves):
    """RFC 6962 PATH(m, D[n]), leaf to root."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return audit_path(m, leaves[:k]) + [tree_hash(leaves[k:])]
    return audit_path(m - k, leaves[k:]) + [tree_hash(leaves[:k])]


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


with open(bundle_file, "rb") as f:
    content = f.read()
sha256 = hashlib.sha256(content).digest()

root_key = ec.generate_private_key(ec.SECP384R1())
root = ca_cert("test sigstore root", root_key, "test sigstore root", root_key, hashes.SHA384())
intermediate_key = ec.generate_private_key(ec.SECP256R1())
intermediate = ca_cert("test sigstore intermediate", intermediate_key, "test sigstore root",
                       root_key, hashes.SHA384())
stranger_key = ec.generate_private_key(ec.SECP256R1())
stranger = ca_cert("stranger ca", stranger_key, "stranger ca", stranger_key, hashes.SHA256())
log_key = ec.generate_private_key(ec.SECP256R1())
log_id = hashlib.sha256(spki(log_key)).digest()
stranger_log_key = ec.generate_private_key(ec.SECP256R1())


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


trusted_root = {
    "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "tlogs": [{
        "baseUrl": "https://rekor.test",
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": b64(spki(log_key)),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": {"start": rfc3339(now - datetime.timedelta(days=30))},
        },
        "logId": {"keyId": b64(log_id)},
    }],
    "certificateAuthorities": [{
        "subject": {"organization": "test", "commonName": "test sigstore"},
        "uri": "https://fulcio.test",
        "certChain": {"certificates": [{"rawBytes": b64(der(intermediate))},
                                       {"rawBytes": b64(der(root))}]},
        "validFor": {"start": rfc3339(now - datetime.timedelta(days=30))},
    }],
    "ctlogs": [],
    "timestampAuthorities": [],
}


def tlog_entry(cert, signature, with_set=True, with_proof=True, logged=sha256, log=None,
               note_key=None):
    log = log or log_key
    note_key = note_key or log
    entry_log_id = hashlib.sha256(spki(log)).digest()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    body = canonical({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": logged.hex()}},
            "signature": {"content": b64(signature), "publicKey": {"content": b64(pem)}},
        },
    })
    leaves = [leaf_hash(b"other entry %d" % i) for i in range(6)]
    index = 3
    leaves[index] = leaf_hash(body)
    root_hash = tree_hash(leaves)
    entry = {
        "logIndex": "1234",
        "logId": {"keyId": b64(entry_log_id)},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
        "integratedTime": str(integrated_time),
        "canonicalizedBody": b64(body),
    }
    if with_set:
        payload = canonical({
            "body": b64(body),
            "integratedTime": integrated_time,
            "logID": entry_log_id.hex(),
            "logIndex": 1234,
        })
        entry["inclusionPromise"] = {
            "signedEntryTimestamp": b64(log.sign(payload, ec.ECDSA(hashes.SHA256())))
        }
    if with_proof:
        note = "%s\n%d\n%s\n" % (ORIGIN, len(leaves), b64(root_hash))
        note_signature = note_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        envelope = note + "\n" + "\u2014 %s %s\n" % (ORIGIN, b64(entry_log_id[:4] + note_signature))
        entry["inclusionProof"] = {
            "logIndex": str(index),
            "rootHash": b64(root_hash),
            "treeSize": str(len(leaves)),
            "hashes": [b64(h) for h in audit_path(index, leaves)],
            "checkpoint": {"envelope": envelope},
        }
    return entry


def message_signature(key, digest=sha256, algorithm="SHA2_256", prehash=hashes.SHA256()):
    signature = key.sign(digest, ec.ECDSA(utils.Prehashed(prehash)))
    return signature, {
        "messageDigest": {"algorithm": algorithm, "digest": b64(digest)},
        "signature": b64(signature),
    }


def keyless(version=V03, ca=intermediate, ca_key=intermediate_key, not_before=None,
            not_after=None, with_set=True, with_proof=True, issuer_ext=FULCIO_ISSUER_V2,
            code_signing=True, mutate=None, signer=None, **entry_options):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = leaf_cert(
        key, ca, ca_key,
        not_before or now - datetime.timedelta(minutes=5),
        not_after or now + datetime.timedelta(minutes=5),
        issuer_ext=issuer_ext, code_signing=code_signing,
    )
    signature, message = message_signature(signer or key)
    entry = tlog_entry(cert, signature, with_set, with_proof, **entry_options)
    if mutate:
        mutate(entry)
    if version == V03:
        material = {"certificate": {"rawBytes": b64(der(cert))}}
    else:
        material = {"x509CertificateChain": {"certificates": [{"rawBytes": b64(der(cert))},
                                                              {"rawBytes": b64(der(ca))}]}}
    material["tlogEntries"] = [entry]
    return {"mediaType": version, "verificationMaterial": material, "messageSignature": message}


def break_proof(entry):
    hashes_ = entry["inclusionProof"]["hashes"]
    first = bytearray(base64.b64decode(hashes_[0]))
    first[0] ^= 1
    hashes_[0] = b64(bytes(first))


def tamper_set(entry):
    entry["integratedTime"] = str(integrated_time - 1)


site_key = ec.generate_private_key(ec.SECP256R1())
_, site_message = message_signature(site_key)
p384_key = ec.generate_private_key(ec.SECP384R1())
_, sha384_message = message_signature(
    p384_key, hashlib.sha384(content).digest(), "SHA2_384", hashes.SHA384()
)

cases = {
    "keyless": keyless(),
    "keyless-v0.1-set-only": keyless(version=V01, with_proof=False),
    "keyless-proof-only": keyless(with_set=False),
    "keyless-legacy-issuer": keyless(issuer_ext=FULCIO_ISSUER_V1),
    "expired": keyless(not_before=now - datetime.timedelta(hours=2),
                       not_after=now - datetime.timedelta(hours=1)),
    "not-yet-valid": keyless(not_before=now - datetime.timedelta(seconds=30),
                             not_after=now + datetime.timedelta(minutes=10)),
    "broken-proof": keyless(mutate=break_proof),
    "tampered-set": keyless(with_proof=False, mutate=tamper_set),
    "untrusted-ca": keyless(ca=stranger, ca_key=stranger_key),
    "no-code-signing": keyless(code_signing=False),
    "entry-of-another-file": keyless(logged=hashlib.sha256(content + b"!").digest()),
    "signed-by-another-key": keyless(signer=ec.generate_private_key(ec.SECP256R1())),
    "forged-checkpoint": keyless(with_set=False, note_key=stranger_log_key),
    "unknown-log": keyless(log=stranger_log_key),
    "no-evidence": keyless(with_set=False, with_proof=False),
    "key-based": {
        "mediaType": V03,
        "verificationMaterial": {"publicKey": {"hint": "site"}, "tlogEntries": []},
        "messageSignature": site_message,
    },
    "sha384": {
        "mediaType": V03,
        "verificationMaterial": {"publicKey": {"hint": "p384"}},
        "messageSignature": sha384_message,
    },
}

os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "trusted_root.json"), "w") as f:
    json.dump(trusted_root, f, indent=2)
# The same root, but its CA (or its log key) valid only from after the
# entries' integratedTime: a certificate or entry from before must fail.
for part, variant in (("ca", "trusted_root-late-ca.json"), ("log", "trusted_root-late-log.json")):
    late = json.loads(json.dumps(trusted_root))
    valid_for = {"start": rfc3339(now)}
    if part == "ca":
        late["certificateAuthorities"][0]["validFor"] = valid_for
    else:
        late["tlogs"][0]["publicKey"]["validFor"] = valid_for
    with open(os.path.join(out_dir, variant), "w") as f:
        json.dump(late, f, indent=2)
with open(os.path.join(out_dir, "key.pub.pem"), "wb") as f:
    f.write(site_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
with open(os.path.join(out_dir, "p384.pub.pem"), "wb") as f:
    f.write(p384_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
for case, bundle in cases.items():
    with open(os.path.join(out_dir, case + ".sigstore.json"), "w") as f:
        json.dump(bundle, f, indent=2)
