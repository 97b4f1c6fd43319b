#!/usr/bin/env node
// Signs requests with AWS's own SigV4 implementation (@aws-sdk/signature-v4,
// i.e. @smithy/signature-v4, with @aws-crypto/sha256-js) so that
// tests/storage/sigv4_test.cc can compare our signer against it.
//
// Run from the directory that ensure.sh prints (or with NODE_PATH pointing at
// its node_modules). Reads a JSON array of cases on stdin:
//   {"accessKeyId", "secretAccessKey", "sessionToken"?, "region", "date": ISO-8601,
//    "method", "host", "path": raw (not encoded) path, "query": {name: value},
//    "headers": {name: value}, "body"?: string, "unsignedPayload"?: bool}
// and prints a JSON array of {"authorization", "headers"} (the signed
// request's headers). The path is encoded per segment the way the S3 client
// serializer does it (escapeUri), and signed with uriEscapePath: false, as
// the S3 client configures the signer (S3 does not double-encode).
"use strict";
const { SignatureV4 } = require("@aws-sdk/signature-v4");
const { Sha256 } = require("@aws-crypto/sha256-js");
const { escapeUri } = require("@smithy/util-uri-escape");

async function signOne(c) {
  const signer = new SignatureV4({
    credentials: {
      accessKeyId: c.accessKeyId,
      secretAccessKey: c.secretAccessKey,
      sessionToken: c.sessionToken || undefined,
    },
    region: c.region,
    service: "s3",
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: true,
  });
  const headers = Object.assign({ host: c.host }, c.headers || {});
  if (c.unsignedPayload) headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
  const path = (c.path || "/").split("/").map(escapeUri).join("/");
  const request = {
    method: c.method,
    protocol: "https:",
    hostname: c.host,
    path,
    query: c.query || {},
    headers,
    body: c.body === undefined ? undefined : c.body,
  };
  const signed = await signer.sign(request, { signingDate: new Date(c.date) });
  return { authorization: signed.headers.authorization, headers: signed.headers };
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const cases = JSON.parse(input);
  const out = [];
  for (const c of cases) out.push(await signOne(c));
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`sign.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
