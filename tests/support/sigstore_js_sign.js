// Makes a key-based Sigstore bundle (DSSE) for an image signature with the
// sigstore-js signing library, offline: a local key signs, no witnesses.
const crypto = require('crypto');
const fs = require('fs');
const { DSSEBundleBuilder } = require('@sigstore/sign');
const { bundleToJSON } = require('@sigstore/bundle');
const [keyPath, statementPath] = process.argv.slice(2);
const key = crypto.createPrivateKey(fs.readFileSync(keyPath));
const publicKey = crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' });
const signer = {
  sign: async (data) => ({
    signature: crypto.sign('sha256', data, key),
    key: { $case: 'publicKey', publicKey, hint: '' },
  }),
};
new DSSEBundleBuilder({ signer, witnesses: [] })
  .create({ data: fs.readFileSync(statementPath), type: 'application/vnd.in-toto+json' })
  .then((bundle) => process.stdout.write(JSON.stringify(bundleToJSON(bundle))))
  .catch((e) => { console.error(e); process.exit(1); });
