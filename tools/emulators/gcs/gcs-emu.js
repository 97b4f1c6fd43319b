// Test-only launcher: starts firebase-tools' Cloud Storage emulator (the GCS
// JSON API routes) without its Java rules runtime, which needs Java 21 and a
// JAR download (see docs spec storage.md §5.1). Relies on non-public internals
// of firebase-tools, so package.json pins 15.34.2.
// Run from the directory that holds node_modules (ensure.sh prints it; the
// script is copied there):  PORT=9199 TMPDIR=$(mktemp -d) node gcs-emu.js
// Blobs go under $TMPDIR/firebase/storage/blobs: give each instance its own
// TMPDIR. SIGTERM stops it and deletes its blobs.
const { StorageEmulator } = require("firebase-tools/lib/emulator/storage");
const { EmulatorRegistry } = require("firebase-tools/lib/emulator/registry");
const host = process.env.HOST || "127.0.0.1";
const port = +(process.env.PORT || 9199);
const emu = new StorageEmulator({ projectId: process.env.PROJECT || "demo-test", host, port, auto_download: false });
emu._rulesRuntime.start = async () => {};
emu._rulesRuntime.stop = async () => {};
emu._rulesManager.start = async () => ({ errors: [], warnings: [] });
emu._rulesManager.stop = async () => {};
EmulatorRegistry.start(emu).then(() => console.log(`gcs emulator listening on http://${host}:${port}`),
  (e) => { console.error("start failed:", e); process.exit(1); });
// Some handlers throw after replying (e.g. media upload without ?name=): keep the server alive.
process.on("unhandledRejection", (e) => console.error("unhandled:", e && e.message));
const bye = () => EmulatorRegistry.stop("storage").finally(() => process.exit(0));
process.on("SIGTERM", bye); process.on("SIGINT", bye);
