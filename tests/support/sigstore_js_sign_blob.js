// Makes a key-based Sigstore bundle with a message signature over a file
// (what `cosign sign-blob --bundle` makes with a key) with the sigstore-js
// signing library, offline: a local key signs, no witnesses.
const crypto = require('crypto');
const fs = require('fs');
const { MessageSignatureBundleBuilder } = require('@sigstore/sign');
const { bundleToJSON } = require('@sigstore/bundle');
const [keyPath, filePath] = process.argv.slice(2);
const key = crypto.createPrivateKey(fs.readFileSync(keyPath));
const publicKey = crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' });
const signer = {
  sign: async (data) => ({
    signature: crypto.sign('sha256', data, key),
    key: { $case: 'publicKey', publicKey, hint: 'site key' },
  }),
};
new MessageSignatureBundleBuilder({ signer, witnesses: [] })
  .create({ data: fs.readFileSync(filePath) })
  .then((bundle) => process.stdout.write(JSON.stringify(bundleToJSON(bundle))))
  .catch((e) => { console.error(e); process.exit(1); });
