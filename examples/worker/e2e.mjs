// End-to-end test of the ztgate Worker in the local Workers runtime (workerd).
//
//   node examples/worker/e2e.mjs        (after `examples/worker/run-local.sh --build`)
//
// - starts a JWKS server on 127.0.0.1 with RSA keys made here, and mints Access-shaped tokens
//   signed by them (node:crypto, RS256);
// - serves the Worker with run-local.sh (wrangler dev, workerd) and runs the Access cases over
//   HTTP on 127.0.0.1: valid user (header and cookie), valid service token, missing credential,
//   wrong aud, expired, email not allowed, unknown route, key rotation (unknown kid, then the
//   new key), an unknown kid inside the refetch cooldown, JWKS down with cached keys;
// - drives a second instance through Miniflare's dispatchFetch to set `request.cf`: the
//   mTLS cases (verified, revoked, unknown revocation, absent, spoofed cf-cert-* headers, an
//   empty tlsClientAuth object), 100 concurrent cold requests sharing one JWKS fetch, and
//   Svix webhooks whose secret comes from a Worker secret or a Secrets Store binding, and a
//   Durable Object that cannot answer (replays and revocations refused, budgets let through)
//   or is full (new records refused, old ones still answered);
// - the edge cache: a new isolate (a new Miniflare instance, sharing the Cache API storage of
//   the one before) verifies without fetching the JWKS, yet still fetches for a new kid; a copy
//   past its max-age or with a body that is no JWKS is not used;
// - fleet state in the Durable Object (ZTGATE_STATE, SQLite-backed), with wrangler dev
//   restarted on the same storage between steps, each start a new workerd process and so a
//   new isolate: a webhook replayed after a restart is 409, a revoked login is refused by the
//   next isolate, and the failed-authentication budget (ZTGATE_AUTH_FAILURES=3/600s) is spent
//   across isolates (2 failures in one, 1 in the next, then 429 with Retry-After, still 429 in a
//   third);
// - measures the per-request time of RS256 through WebCrypto against the pure-Rust path
//   (ZTGATE_RS256=pure-rust), both warm, from the difference of two request sizes;
// - the event sources without a browser, each with its own identity: the cron trigger
//   (wrangler dev --test-scheduled, GET /__scheduled?cron=...) records a maintenance run as the
//   platform's own principal, which no HTTP caller can obtain; queue messages (wrangler dev's
//   local queue) are signed envelopes: tampered, forged, for another queue, expired, replayed,
//   swapped or garbage ones are never stored, never retried, logged without their text and
//   counted, while a genuine one whose storage step fails is retried and stored once; Workers
//   RPC (Miniflare, a second Worker calling record_note over a service binding): refused without
//   a valid credential before storage is asked (the note count does not move).
//
// - GET /admin/ws (WebSocket, through wrangler dev): refused with the 401/403 JSON before any
//   socket exists; an open socket answers each message with the caller's id; it is closed with
//   4401 when its token expires, or when its login is revoked while it is open.
//
// Exits non-zero on the first failed case. Only loopback traffic.
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, Response } from "miniflare";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
const TEAM = "https://e2e-test.cloudflareaccess.com";
const AUD = "aud-e2e-7f3a";
const ADMIN = "alice@acme.test";
const SERVICE = "deploy-bot.access";
const started = Date.now();
let passed = 0;

function fail(message) {
  console.error(`e2e: FAILED: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

// --- keys, tokens, JWKS ------------------------------------------------------------------
function makeKey(kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = publicKey.export({ format: "jwk" });
  return { kid, privateKey, jwk: { kty: "RSA", kid, use: "sig", alg: "RS256", n: jwk.n, e: jwk.e } };
}

const b64url = (data) => Buffer.from(data).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

function mint(key, claims, header = {}) {
  const h = b64url(JSON.stringify({ alg: "RS256", kid: key.kid, typ: "JWT", ...header }));
  const p = b64url(JSON.stringify(claims));
  const signature = crypto.sign("sha256", Buffer.from(`${h}.${p}`), key.privateKey);
  return `${h}.${p}.${b64url(signature)}`;
}

// HMAC-signed tokens (v2, docs/hmac-token-format.md) and queue envelopes, made here with
// node:crypto, independently of the Worker's Rust code.
function hmacKey(kid) {
  return { kid, secret: crypto.randomBytes(32).toString("base64url") };
}

function hmacToken(key, purpose, subject, expiresAt = now() + 600) {
  const id = b64url(crypto.randomBytes(16));
  const input = `ztgate-hmac-v2\0${key.kid}\0${purpose}\0${expiresAt}\0${id}\0${subject}`;
  const mac = crypto.createHmac("sha256", key.secret).update(input).digest();
  return `v2.${key.kid}.${expiresAt}.${id}.${b64url(subject)}.${b64url(mac)}`;
}

function envelope(key, queue, body, expiresAt = now() + 600) {
  const digest = crypto.createHash("sha256").update(body).digest("hex");
  return JSON.stringify({ token: hmacToken(key, `queue:${queue}`, digest, expiresAt), body });
}

function user(email = ADMIN, extra = {}) {
  const t = now();
  return {
    aud: [AUD], email, exp: t + 600, iat: t - 5, nbf: t - 5, iss: TEAM, type: "app",
    identity_nonce: "n0nce", sub: "7335d417-61da-459d-899c-0a01c76a2f94", country: "XX", ...extra,
  };
}

function service(commonName = SERVICE) {
  const t = now();
  return { aud: [AUD], common_name: commonName, exp: t + 600, iat: t - 5, nbf: t - 5, iss: TEAM, type: "app", sub: "" };
}

const jwks = { keys: [], down: false, fetches: 0 };
const jwksServer = http.createServer((req, res) => {
  jwks.fetches += 1;
  if (jwks.down) {
    res.writeHead(503, { "content-type": "text/plain" }).end("down");
    return;
  }
  const body = JSON.stringify({ keys: jwks.keys.map((k) => k.jwk), public_cert: { kid: "x", cert: "ignored" } });
  res.writeHead(200, { "content-type": "application/json", "cache-control": "public, max-age=600" }).end(body);
});

async function listen(server) {
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server.address().port;
}

async function freePort() {
  const server = net.createServer();
  const port = await listen(server);
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// --- checks --------------------------------------------------------------------------------
async function expect(name, response, status, body = {}) {
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    fail(`${name}: body is not JSON: ${text.slice(0, 200)}`);
  }
  if (response.status !== status) fail(`${name}: status ${response.status}, expected ${status}: ${text.slice(0, 300)}`);
  for (const [k, v] of Object.entries(body)) {
    if (JSON.stringify(json[k]) !== JSON.stringify(v)) fail(`${name}: ${k} = ${JSON.stringify(json[k])}, expected ${JSON.stringify(v)}`);
  }
  if (status === 401 && !response.headers.get("www-authenticate")) fail(`${name}: 401 without WWW-Authenticate`);
  passed += 1;
  console.log(`  ok  ${name} -> ${status}${json.code ? ` ${json.code}` : ""}`);
  return json;
}

// --- the Worker under run-local.sh -------------------------------------------------------
function serveWorker(env) {
  const child = spawn(path.join(here, "run-local.sh"), [], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const stop = () => {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
    return exited;
  };
  return { child, stop, log: () => log };
}

async function waitUp(base, server, seconds = 180) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null) fail(`run-local.sh exited (${server.child.exitCode}):\n${server.log()}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.status === 200) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`the Worker did not answer within ${seconds}s:\n${server.log()}`);
}

async function accessCases(base) {
  const k1 = jwks.keys[0];
  const get = (p, headers = {}) => fetch(`${base}${p}`, { headers });
  const bearer = (token) => ({ "cf-access-jwt-assertion": token });

  await expect("healthz is public", await get("/healthz"), 200, { status: "ok" });
  console.log(`e2e: first passing Worker request ${((Date.now() - started) / 1000).toFixed(1)}s after e2e start` +
    (process.env.CI_STARTED ? `, ${now() - Number(process.env.CI_STARTED)}s after CI start` : ""));
  await expect("valid user (header)", await get("/admin/whoami", bearer(mint(k1, user()))), 200, { kind: "user", email: ADMIN });
  await expect("valid user (CF_Authorization cookie)", await get("/admin/whoami", { cookie: `CF_Authorization=${mint(k1, user())}` }), 200, { kind: "user", email: ADMIN });
  await expect("valid service token", await get("/admin/whoami", bearer(mint(k1, service()))), 200, { kind: "service", common_name: SERVICE });
  await expect("service token carrying an email is still a service", await get("/admin/whoami", bearer(mint(k1, { ...service(), email: ADMIN }))), 200, { kind: "service" });
  await expect("missing credential", await get("/admin/whoami"), 401, { code: "missing_credential" });
  await expect("wrong aud", await get("/admin/whoami", bearer(mint(k1, user(ADMIN, { aud: ["someone-else"] })))), 401, { code: "invalid_token" });
  await expect("expired", await get("/admin/whoami", bearer(mint(k1, user(ADMIN, { exp: now() - 3600 })))), 401, { code: "token_expired" });
  await expect("wrong issuer", await get("/admin/whoami", bearer(mint(k1, user(ADMIN, { iss: "https://evil.cloudflareaccess.com" })))), 401, { code: "invalid_token" });
  await expect("email not allowed", await get("/admin/whoami", bearer(mint(k1, user("mallory@acme.test")))), 403, { code: "forbidden" });
  await expect("service token not allowed", await get("/admin/whoami", bearer(mint(k1, service("other.access")))), 403, { code: "forbidden" });
  const tampered = mint(k1, user("mallory@acme.test")).split(".");
  tampered[1] = b64url(JSON.stringify(user()));
  await expect("tampered payload", await get("/admin/whoami", bearer(tampered.join("."))), 401, { code: "invalid_token" });
  await expect("alg none", await get("/admin/whoami", bearer(`${b64url('{"alg":"none","kid":"k1"}')}.${b64url(JSON.stringify(user()))}.`)), 401, { code: "invalid_token" });
  await expect("bad header never falls through to a valid cookie", await get("/admin/whoami", { ...bearer("garbage"), cookie: `CF_Authorization=${mint(k1, user())}` }), 401, { code: "invalid_token" });
  await expect("64 KB assertion header", await get("/admin/whoami", bearer("a".repeat(64 * 1024))), 431, { code: "header_too_large" });
  await expect("unknown admin path: identity first", await get("/admin/secret-thing"), 401, { code: "missing_credential" });
  await expect("unknown admin path with a valid token", await get("/admin/secret-thing", bearer(mint(k1, user()))), 404, { code: "not_found" });
  await expect("undeclared route", await get("/internal/debug"), 403, { code: "no_policy" });
  await expect("webhook without a secret", await fetch(`${base}/webhooks/inbound`, { method: "POST", body: "{}" }), 503, { code: "not_configured" });

  // Rotation: Access starts signing with k2. The first k2 token is an unknown kid on a cached
  // set: one refetch finds it.
  const k2 = makeKey("k2");
  jwks.keys.push(k2);
  let before = jwks.fetches;
  await expect("rotation: new kid after one refetch", await get("/admin/whoami", bearer(mint(k2, user()))), 200, { kind: "user" });
  if (jwks.fetches !== before + 1) fail(`rotation: ${jwks.fetches - before} JWKS fetches, expected 1`);
  await expect("rotation: old key still valid", await get("/admin/whoami", bearer(mint(k1, user()))), 200, { kind: "user" });
  // An attacker's kid right after: the cooldown forbids another fetch.
  before = jwks.fetches;
  const impostor = makeKey("k3");
  for (let i = 0; i < 5; i++) {
    await expect(`unknown kid within the cooldown (${i + 1}/5)`, await get("/admin/whoami", bearer(mint(impostor, user()))), 401, { code: "invalid_token" });
  }
  if (jwks.fetches !== before) fail(`unknown kids caused ${jwks.fetches - before} JWKS fetches inside the cooldown`);
  // The JWKS endpoint goes down: cached keys keep working, without fetches.
  jwks.down = true;
  before = jwks.fetches;
  await expect("JWKS down: cached keys still verify", await get("/admin/whoami", bearer(mint(k2, service()))), 200, { kind: "service" });
  if (jwks.fetches !== before) fail("a cached, fresh key set was refetched");
  jwks.down = false;
}

// --- mTLS and concurrency through Miniflare --------------------------------------------------
function miniflare(bindings) {
  return new Miniflare(miniflareOptions(bindings));
}

function miniflareOptions(bindings) {
  return { ...miniflareWorker(bindings), cf: false };
}

// One Worker's options (the ones a `workers: [...]` entry takes).
function miniflareWorker(bindings) {
  return {
    rootPath: here,
    scriptPath: path.join(here, "build/index.js"),
    modules: true,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2026-04-01",
    bindings,
    // As wrangler.toml binds them; each instance keeps the objects' storage in memory.
    durableObjects: {
      ZTGATE_STATE: { className: "ZtgateState", useSQLite: true },
      ZTGATE_STORE: { className: "AppStore", useSQLite: true },
    },
  };
}

async function mtlsCases(mf) {
  const cert = {
    certPresented: "1", certVerified: "SUCCESS", certRevoked: "0",
    certFingerprintSHA256: crypto.randomBytes(32).toString("hex"),
    certFingerprintSHA1: "", certSubjectDN: "CN=billing.internal", certIssuerDN: "CN=Acme Client CA",
    certSerial: "01", certNotBefore: "", certNotAfter: "", certIssuerDNLegacy: "", certSubjectDNLegacy: "",
    certIssuerDNRFC2253: "", certSubjectDNRFC2253: "",
  };
  const at = (cf, headers = {}) => mf.dispatchFetch("http://worker.local/mtls/whoami", { cf, headers });
  await expect("mTLS verified", await at({ tlsClientAuth: cert }), 200, { fingerprint: cert.certFingerprintSHA256, subject_dn: "CN=billing.internal" });
  await expect("mTLS revoked", await at({ tlsClientAuth: { ...cert, certRevoked: "1" } }), 401, { code: "invalid_credential" });
  await expect("mTLS not verified", await at({ tlsClientAuth: { ...cert, certVerified: "FAILED:self signed certificate" } }), 401, { code: "invalid_credential" });
  await expect("mTLS revocation unknown", await at({ tlsClientAuth: { ...cert, certRevoked: undefined } }), 401, { code: "invalid_credential" });
  await expect("mTLS absent (no tlsClientAuth)", await at({}), 401, { code: "missing_credential" });
  await expect("mTLS not presented", await at({ tlsClientAuth: { ...cert, certPresented: "0" } }), 401, { code: "missing_credential" });
  await expect("mTLS empty tlsClientAuth object", await at({ tlsClientAuth: {} }), 401, { code: "missing_credential" });
  await expect("mTLS fields of the wrong type", await at({ tlsClientAuth: { certPresented: 1, certVerified: true, certRevoked: 0, certFingerprintSHA256: 7 } }), 401, { code: "missing_credential" });
  const spoofed = { "cf-cert-presented": "true", "cf-cert-verified": "true", "cf-cert-revoked": "false", "cf-cert-fingerprint-sha256": cert.certFingerprintSHA256 };
  await expect("mTLS spoofed cf-cert-* headers are ignored", await at({}, spoofed), 401, { code: "missing_credential" });
  await expect("the isolate survived every odd cf (healthz)", await mf.dispatchFetch("http://worker.local/healthz"), 200, { status: "ok" });
}

// --- webhooks: the secret through a SecretSource (Worker secret, Secrets Store) --------------
function svix(secret, body, { id = `msg_${crypto.randomUUID()}`, timestamp = now() } = {}) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const mac = crypto.createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
  return { "svix-id": id, "svix-timestamp": String(timestamp), "svix-signature": `v1,${mac}`, "content-type": "application/json" };
}

async function webhookCases(mf, secret, label) {
  const post = (headers, body) => mf.dispatchFetch("http://worker.local/webhooks/inbound", { method: "POST", headers, body });
  const body = JSON.stringify({ type: "email.delivered", data: { to: "bob@acme.test" } });
  const headers = svix(secret, body);
  await expect(`webhook via ${label}: valid`, await post(headers, body), 200, { id: headers["svix-id"] });
  await expect(`webhook via ${label}: replayed`, await post(headers, body), 409, { code: "replayed" });
  await expect(`webhook via ${label}: tampered body`, await post(svix(secret, body), body.replace("bob", "eve")), 401, { code: "invalid_credential" });
  const stale = now() - 3600;
  await expect(`webhook via ${label}: stale timestamp`, await post(svix(secret, body, { timestamp: stale }), body), 401, { code: "invalid_credential" });
  await expect(`webhook via ${label}: signed with another secret`, await post(svix(`whsec_${crypto.randomBytes(24).toString("base64")}`, body), body), 401, { code: "invalid_credential" });
  const big = "x".repeat(1024 * 1024 + 1);
  await expect(`webhook via ${label}: body over 1 MiB`, await post(svix(secret, big), big), 413, { code: "payload_too_large" });
}

// The object cannot answer (here: bound as a class without SQL storage, so it answers every call
// with an error): what must not pass unchecked is refused (503 state_unavailable: a webhook's
// replay check, a verified request's revocation check), the failure budget lets requests through.
async function stateUnavailableCases(bindings, key) {
  const secret = `whsec_${crypto.randomBytes(24).toString("base64")}`;
  const mf = new Miniflare({
    ...miniflareOptions({ ...bindings, ZTGATE_WEBHOOK_SECRET: secret }),
    durableObjects: { ZTGATE_STATE: { className: "ZtgateState", useSQLite: false } },
  });
  try {
    const body = JSON.stringify({ type: "email.delivered" });
    const post = await mf.dispatchFetch("http://worker.local/webhooks/inbound", { method: "POST", headers: svix(secret, body), body });
    await expect("state unavailable: webhook refused, not accepted unchecked", post, 503, { code: "state_unavailable" });
    const whoami = (token) => mf.dispatchFetch("http://worker.local/admin/whoami", { headers: { "cf-access-jwt-assertion": token } });
    await expect("state unavailable: revocations unknown, valid token refused", await whoami(mint(key, user())), 503, { code: "state_unavailable" });
    await expect("state unavailable: the failure budget lets through (healthz)", await mf.dispatchFetch("http://worker.local/healthz"), 200, { status: "ok" });
    await expect("state unavailable: a bad token is still verified and refused", await whoami(mint(key, user(ADMIN, { aud: ["not-ours"] }))), 401, { code: "invalid_token" });
  } finally {
    await mf.dispose();
  }
}

// A full object refuses rather than forgets: with room for 2 replay records and 1 revocation
// (ZTGATE_STATE_BOUNDS), a third live delivery is 503 while the first two are still answered as
// replays, and a second revocation is 503 while the first can be sent again.
async function stateBoundsCases(bindings, key) {
  const secret = `whsec_${crypto.randomBytes(24).toString("base64")}`;
  const mf = miniflare({ ...bindings, ZTGATE_WEBHOOK_SECRET: secret, ZTGATE_STATE_BOUNDS: "2/100/1" });
  try {
    const body = JSON.stringify({ type: "email.delivered" });
    const deliveries = [svix(secret, body), svix(secret, body), svix(secret, body)];
    const post = (headers) => mf.dispatchFetch("http://worker.local/webhooks/inbound", { method: "POST", headers, body });
    await expect("state bounds: delivery 1/2", await post(deliveries[0]), 200);
    await expect("state bounds: delivery 2/2", await post(deliveries[1]), 200);
    await expect("state bounds: a third live delivery is refused, nothing forgotten", await post(deliveries[2]), 503, { code: "state_unavailable" });
    await expect("state bounds: delivery 1 still a replay", await post(deliveries[0]), 409, { code: "replayed" });
    const revoke = (id) => mf.dispatchFetch("http://worker.local/admin/revocations", {
      method: "POST",
      headers: { "cf-access-jwt-assertion": mint(key, user()), "content-type": "application/json" },
      body: JSON.stringify({ kind: "api_key", id }),
    });
    await expect("state bounds: revocation 1/1", await revoke("old-ci-key"), 201);
    await expect("state bounds: a second revocation is refused", await revoke("other-key"), 503, { code: "state_unavailable" });
    await expect("state bounds: the first again (twice is once)", await revoke("old-ci-key"), 201);
  } finally {
    await mf.dispose();
  }
}

async function concurrentColdRequests(mf, key) {
  const before = jwks.fetches;
  const token = mint(key, user());
  // Each body is read as soon as its response arrives: a hundred unread bodies held at once
  // tie up the client's connections to workerd.
  const statuses = await Promise.all(
    Array.from({ length: 100 }, async () => {
      const r = await mf.dispatchFetch("http://worker.local/admin/whoami", { headers: { "cf-access-jwt-assertion": token } });
      await r.arrayBuffer();
      return r.status;
    }),
  );
  if (!statuses.every((s) => s === 200)) fail(`concurrent cold requests: statuses ${[...new Set(statuses)]}`);
  if (jwks.fetches - before !== 1) fail(`100 concurrent cold requests made ${jwks.fetches - before} JWKS fetches, expected 1`);
  passed += 1;
  console.log("  ok  100 concurrent cold requests -> 200, one JWKS fetch");
}

// --- the edge cache: a new isolate finds the JWKS in the Cache API ------------------------
// Each Miniflare instance runs its own workerd process, so its Worker is a genuinely new
// isolate (the Rust statics, the JWKS cache among them, start empty); instances given the same
// `cachePersist` directory share one Cache API storage, as the isolates of a data center share
// caches.default. A copy is planted from outside with `getCaches()` before the first request.
async function edgeCacheCases(bindings) {
  const t0 = Date.now();
  const certsUrl = bindings.ZTGATE_CERTS_URL;
  const dirs = [];
  const cacheDir = () => {
    dirs.push(fs.mkdtempSync(path.join(os.tmpdir(), "ztgate-e2e-cache-")));
    return dirs.at(-1);
  };
  const isolate = (dir) => new Miniflare({ ...miniflareOptions(bindings), cachePersist: dir });
  const whoami = (mf, key) => mf.dispatchFetch("http://worker.local/admin/whoami", { headers: { "cf-access-jwt-assertion": mint(key, user()) } });
  const fetchesDuring = async (run) => {
    const before = jwks.fetches;
    await run();
    return jwks.fetches - before;
  };
  const k1 = jwks.keys[0];
  const shared = cacheDir();
  const counts = {};
  try {
    let mf = isolate(shared);
    try {
      counts.first = await fetchesDuring(async () => {
        await expect("edge cache: first isolate, empty cache", await whoami(mf, k1), 200, { kind: "user" });
      });
      if (counts.first !== 1) fail(`edge cache: the first isolate made ${counts.first} JWKS fetches, expected 1`);
      // The copy is written in the background (waitUntil), after the response: wait for it.
      const cache = (await mf.getCaches()).default;
      let stored;
      for (let i = 0; i < 200 && !stored; i++) {
        stored = await cache.match(certsUrl);
        if (!stored) await new Promise((r) => setTimeout(r, 10));
      }
      if (!stored) fail("edge cache: no copy stored after a network fetch");
      const h = (name) => stored.headers.get(name);
      const fetchedAt = Number(h("x-ztgate-fetched-at"));
      if (h("cache-control") !== "max-age=600" || !h("content-type")?.startsWith("application/json") || h("set-cookie") !== null || !(Math.abs(fetchedAt - now()) <= 5)) {
        fail(`edge cache: stored copy has headers ${JSON.stringify([...stored.headers])}`);
      }
      if (JSON.parse(await stored.text()).keys?.[0]?.kid !== k1.kid) fail("edge cache: stored copy is not the JWKS");
    } finally {
      await mf.dispose();
    }
    mf = isolate(shared);
    try {
      counts.second = await fetchesDuring(async () => {
        await expect("edge cache: new isolate verifies from the cached JWKS", await whoami(mf, k1), 200, { kind: "user" });
      });
      if (counts.second !== 0) fail(`edge cache: the new isolate made ${counts.second} JWKS fetches, expected 0`);
      const k2 = makeKey("k2-edge");
      jwks.keys.push(k2);
      counts.rotation = await fetchesDuring(async () => {
        await expect("edge cache: new kid in the new isolate reaches the network", await whoami(mf, k2), 200, { kind: "user" });
      });
      if (counts.rotation !== 1) fail(`edge cache: a new kid made ${counts.rotation} JWKS fetches, expected 1`);
    } finally {
      await mf.dispose();
      jwks.keys.splice(1);
    }
    // Planted copies: a valid JWKS fetched 601 s ago with max-age=600 (the Cache API itself still
    // holds it: it was put just now), and a fresh copy whose body has no key.
    const body = JSON.stringify({ keys: [k1.jwk] });
    const planted = [
      ["past its max-age", body, now() - 601],
      ["with no usable key", JSON.stringify({ keys: [] }), now()],
    ];
    for (const [label, text, fetchedAt] of planted) {
      mf = isolate(cacheDir());
      try {
        const headers = { "content-type": "application/json", "cache-control": "max-age=600", "x-ztgate-fetched-at": String(fetchedAt) };
        await (await mf.getCaches()).default.put(certsUrl, new Response(text, { headers }));
        const n = await fetchesDuring(async () => {
          await expect(`edge cache: a copy ${label} is not used`, await whoami(mf, k1), 200, { kind: "user" });
        });
        if (n !== 1) fail(`edge cache: with a copy ${label}, the new isolate made ${n} JWKS fetches, expected 1`);
        counts[label] = n;
      } finally {
        await mf.dispose();
      }
    }
  } finally {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`e2e: edge cache: JWKS fetches first isolate ${counts.first}, new isolate ${counts.second}, new kid ${counts.rotation}, ` +
    `stale copy ${counts["past its max-age"]}, keyless copy ${counts["with no usable key"]}; 4 isolates in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

// --- fleet state: the Durable Object across isolates -----------------------------------------
// wrangler dev keeps the object's SQLite storage in ZTGATE_PERSIST_TO; stopping it and starting
// it again on the same directory is a new workerd process: a new isolate (the Rust statics start
// empty) and a new instance of the object, which finds only what it stored. Requests name their
// client with CF-Connecting-IP (workerd keeps a client's header), so that the failure budget of
// one client is not spent by the others' requests.
async function fleetStateCases(bindings) {
  const t0 = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ztgate-e2e-state-"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const secret = `whsec_${crypto.randomBytes(24).toString("base64")}`;
  const env = {
    ...bindings,
    ZTGATE_CERTS_URL: `${bindings.ZTGATE_CERTS_URL}?run=${crypto.randomUUID()}`,
    ZTGATE_WEBHOOK_SECRET: secret,
    // 200 s per unit: a unit cannot come back during the restarts below.
    ZTGATE_AUTH_FAILURES: "3/600s",
    ZTGATE_LISTEN: `127.0.0.1:${port}`,
    ZTGATE_PERSIST_TO: dir,
  };
  const k1 = jwks.keys[0];
  const sprayer = "198.51.100.7";
  const get = (p, token, ip) => fetch(`${base}${p}`, { headers: { "cf-connecting-ip": ip, ...(token ? { "cf-access-jwt-assertion": token } : {}) } });
  const body = JSON.stringify({ type: "email.delivered", data: { to: "carol@acme.test" } });
  const delivery = svix(secret, body);
  const deliver = () => fetch(`${base}/webhooks/inbound`, { method: "POST", headers: { ...delivery, "cf-connecting-ip": "192.0.2.10" }, body });
  const revokedSub = `e2e-revoked-${crypto.randomUUID()}`;
  const revokedLogin = () => mint(k1, user(ADMIN, { sub: revokedSub, identity_nonce: `nonce-${revokedSub}` }));
  const bad = (i) => mint(k1, user(ADMIN, { aud: [`not-ours-${i}`] }));
  const tooMany = async (name, response) => {
    const retryAfter = Number(response.headers.get("retry-after"));
    await expect(name, response, 429, { code: "too_many_requests" });
    if (!(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 200)) fail(`${name}: Retry-After ${response.headers.get("retry-after")}, expected 1..200 s`);
    return retryAfter;
  };
  const isolates = [];
  const isolate = async (run) => {
    const server = serveWorker(env);
    try {
      await waitUp(base, server);
      isolates.push(Date.now());
      await run();
    } finally {
      await server.stop();
    }
  };
  let waits = [];
  try {
    await isolate(async () => {
      await expect("fleet state: webhook delivered", await deliver(), 200, { id: delivery["svix-id"] });
      await expect("fleet state: webhook replayed, same isolate", await deliver(), 409, { code: "replayed" });
      const revoke = await fetch(`${base}/admin/revocations`, {
        method: "POST",
        headers: { "cf-access-jwt-assertion": mint(k1, user()), "content-type": "application/json", "cf-connecting-ip": "192.0.2.20" },
        body: JSON.stringify({ kind: "access_sub", id: revokedSub }),
      });
      await expect("fleet state: an admin revokes a login", revoke, 201, { revoked: { id: revokedSub, kind: "access_sub" } });
      await expect("fleet state: the revoked login, same isolate", await get("/admin/whoami", revokedLogin(), "192.0.2.30"), 401, { code: "revoked" });
      for (let i = 1; i <= 2; i++) {
        await expect(`fleet state: failed authentication ${i}/3, first isolate`, await get("/admin/whoami", bad(i), sprayer), 401, { code: "invalid_token" });
      }
    });
    await isolate(async () => {
      await expect("fleet state: webhook replayed after a restart (new isolate)", await deliver(), 409, { code: "replayed" });
      await expect("fleet state: the revoked login, new isolate", await get("/admin/whoami", revokedLogin(), "192.0.2.31"), 401, { code: "revoked" });
      await expect("fleet state: revocations listed by the new isolate", await get("/admin/revocations", mint(k1, user()), "192.0.2.20"), 200, { revocations: [{ id: revokedSub, kind: "access_sub" }] });
      await expect("fleet state: failed authentication 3/3, second isolate", await get("/admin/whoami", bad(3), sprayer), 401, { code: "invalid_token" });
      waits.push(await tooMany("fleet state: budget spent across isolates", await get("/admin/whoami", bad(4), sprayer)));
      waits.push(await tooMany("fleet state: even a valid token, before any signature check", await get("/admin/whoami", mint(k1, user()), sprayer)));
      await expect("fleet state: another client keeps its budget", await get("/admin/whoami", mint(k1, user()), "192.0.2.40"), 200, { kind: "user" });
    });
    await isolate(async () => {
      waits.push(await tooMany("fleet state: budget still spent in a third isolate", await get("/admin/whoami", mint(k1, user()), sprayer)));
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`e2e: fleet state: 3 isolates on one Durable Object in ${((Date.now() - t0) / 1000).toFixed(1)}s; Retry-After ${waits.join(", ")} s`);
}

async function median(mf, url, headers, samples) {
  const times = [];
  for (let i = 0; i < samples; i++) {
    const t0 = process.hrtime.bigint();
    const r = await mf.dispatchFetch(url, { headers });
    await r.arrayBuffer();
    if (r.status !== 200) fail(`timing: ${url} answered ${r.status}`);
    times.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  times.sort((x, y) => x - y);
  return times[Math.floor(times.length / 2)];
}

// The Worker's clock stands still while it computes, so time one identity check from outside:
// the median request time with N = 201 checks minus with N = 1, divided by 200.
async function measure(bindings, key) {
  const samples = Number(process.env.ZTGATE_E2E_TIMING_SAMPLES || 15);
  const headers = { "cf-access-jwt-assertion": mint(key, user()) };
  const rows = [];
  for (const engine of ["webcrypto", "pure-rust"]) {
    // No failure budget: each of the repeated checks would ask the Durable Object first.
    const mf = miniflare({ ...bindings, ZTGATE_RS256: engine, ZTGATE_BENCH: "1", ZTGATE_AUTH_FAILURES: "off" });
    try {
      await median(mf, "http://worker.local/bench/identity?n=20", headers, 3); // warm up
      const one = await median(mf, "http://worker.local/bench/identity?n=1", headers, samples);
      const many = await median(mf, "http://worker.local/bench/identity?n=201", headers, samples);
      rows.push({ engine, one, many, check: (many - one) / 200 });
    } finally {
      await mf.dispose();
    }
  }
  console.log(`e2e: one identity check (RS256 verify + claims + policy) inside workerd, median of ${samples}:`);
  for (const r of rows) {
    console.log(`  ${r.engine.padEnd(10)} ${r.check.toFixed(1).padStart(8)} µs per check   (request with 1 check ${(r.one / 1000).toFixed(2)} ms, with 201 checks ${(r.many / 1000).toFixed(2)} ms)`);
  }
  const [web, pure] = rows;
  console.log(`e2e: pure-Rust / WebCrypto = ${(pure.check / web.check).toFixed(1)}x`);
}

// The Worker's decisions reach the console (wrangler tail) as JSON lines, tokens never.
async function logCases(base, server) {
  const k1 = jwks.keys[0];
  const expired = mint(k1, { ...user(), iat: now() - 7200, nbf: now() - 7200, exp: now() - 3600 });
  const forgedPath = "/admin/x%0A%7B%22outcome%22%3A%22verified%22%7D";
  await expect("expired token (logged)", await fetch(`${base}${forgedPath}`, { headers: { "cf-access-jwt-assertion": expired } }), 401, { code: "token_expired" });
  const deadline = Date.now() + 10_000;
  const decision = () => server.log().split("\n").map((l) => l.slice(l.indexOf("{"))).find((l) => {
    try {
      const j = JSON.parse(l);
      return j.outcome === "refused" && j.code === "token_expired";
    } catch {
      return false;
    }
  });
  while (!decision() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const line = decision();
  if (!line) fail(`no JSON decision line for the refused request in the Worker's console:\n${server.log().slice(-2000)}`);
  const j = JSON.parse(line);
  if (j.level !== "INFO" || j.layer !== "identity" || typeof j.time !== "string") fail(`decision line lacks level/layer/time: ${line}`);
  if (server.log().includes(expired) || server.log().includes(expired.split(".")[2])) fail("the token reached the Worker's log");
  if (server.log().split("\n").some((l) => l.trimStart().startsWith('{"outcome":"verified"'))) fail("attacker text started a log line");
  passed += 1;
  console.log(`  ok  decision logged as one JSON line (${line.length} bytes), token absent`);
}


// --- event sources without a browser: cron, queue, RPC -----------------------------------------
const QUEUE = "ztgate-events";
const queueKey = hmacKey("q1");
const rpcKey = hmacKey("r1");

async function adminJson(base, p, init = {}) {
  const headers = { "cf-access-jwt-assertion": mint(jwks.keys[0], user()), ...(init.headers || {}) };
  const r = await fetch(`${base}${p}`, { ...init, headers });
  const text = await r.text();
  try {
    return { status: r.status, json: JSON.parse(text) };
  } catch {
    fail(`${p}: not JSON (${r.status}): ${text.slice(0, 200)}`);
  }
}

const events = async (base) => (await adminJson(base, "/admin/events")).json;

// Polls GET /admin/events until `done(summary)`, within `seconds`.
async function eventually(base, what, done, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    last = await events(base);
    if (done(last)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`${what}: not within ${seconds}s; last summary ${JSON.stringify(last)}`);
}

function ok(name) {
  passed += 1;
  console.log(`  ok  ${name}`);
}

// The cron trigger, fired by wrangler dev --test-scheduled: the platform's principal records a
// maintenance run; over HTTP nobody can, whatever their credential; a cron string that is no
// cron (too long, a line break) is refused before storage.
async function scheduledCases(base, server) {
  const CRON = "*/30 * * * *";
  const fire = async (cron) => {
    const r = await fetch(`${base}/__scheduled?cron=${encodeURIComponent(cron)}`);
    await r.text();
    if (r.status !== 200) fail(`/__scheduled answered ${r.status}`);
  };
  const before = await events(base);
  if (before.maintenance.runs !== 0) fail(`scheduled: ${before.maintenance.runs} runs before the first trigger`);
  await fire(CRON);
  const after = await eventually(base, "scheduled: the cron trigger records a run", (e) => e.maintenance.runs === 1);
  if (after.maintenance.last.cron !== CRON || after.maintenance.last.by !== `scheduled:${CRON}`) {
    fail(`scheduled: the run was recorded as ${JSON.stringify(after.maintenance.last)}`);
  }
  ok("scheduled: the cron trigger reaches storage as scheduled:<cron>");
  const http = (token) => fetch(`${base}/admin/maintenance`, { method: "POST", headers: { "cf-access-jwt-assertion": token } });
  await expect("scheduled: an admin over HTTP cannot record a maintenance run", await http(mint(jwks.keys[0], user())), 403, { code: "forbidden" });
  await expect("scheduled: nor can a service token", await http(mint(jwks.keys[0], service())), 403, { code: "forbidden" });
  await expect("scheduled: nor anyone unauthenticated", await fetch(`${base}/admin/maintenance`, { method: "POST" }), 401, { code: "missing_credential" });
  await fire("x".repeat(200));
  await fire("* * * * *\n{\"outcome\":\"verified\"}");
  // Each /__scheduled request waits for the handler: a refused cron would have been stored by
  // now. One more genuine run, then exactly two.
  await fire(CRON);
  const last = await eventually(base, "scheduled: the second genuine run", (e) => e.maintenance.runs >= 2);
  if (last.maintenance.runs !== 2) fail(`scheduled: ${last.maintenance.runs} runs, expected 2 (a refused cron was stored)`);
  // wrangler dev relays the Worker's console asynchronously: wait for the lines to arrive.
  const refusalLines = () => server.log().split("\n").filter((l) => l.includes('"via":"scheduled"') && l.includes('"outcome":"refused"'));
  const logDeadline = Date.now() + 10_000;
  while (refusalLines().length < 2 && Date.now() < logDeadline) await new Promise((r) => setTimeout(r, 100));
  const refusals = refusalLines();
  if (refusals.length !== 2) fail(`scheduled: ${refusals.length} refusals logged, expected 2`);
  if (server.log().split("\n").some((l) => l.trimStart().startsWith('{"outcome":"verified"'))) fail("scheduled: a cron string started a log line");
  ok("scheduled: a cron string of 200 bytes, or with a line break, is refused and logged, never stored");
}

// Queue messages through wrangler dev's local queue (max_retries 3, batches of up to 1 s).
async function queueCases(base, server) {
  const t0 = Date.now();
  const send = async (name, body, raw = true) => {
    const r = await fetch(`${base}/admin/queue/${raw ? "send-raw" : "send"}`, {
      method: "POST",
      headers: { "cf-access-jwt-assertion": mint(jwks.keys[0], user()), "content-type": "text/plain" },
      body,
    });
    // Sending is plumbing, not a case: what counts is what the consumer does with it.
    const text = await r.text();
    if (r.status !== 202) fail(`queue: ${name}: sending answered ${r.status}: ${text.slice(0, 200)}`);
  };
  const note = (text, extra = {}) => JSON.stringify({ kind: "note", text, ...extra });
  const marker = `secret-${crypto.randomUUID()}`;
  await expect("queue: sending needs an admin", await fetch(`${base}/admin/queue/send-raw`, { method: "POST", body: "x" }), 401, { code: "missing_credential" });

  const genuine = envelope(queueKey, QUEUE, note("signed by a producer holding the key"));
  await send("signed by the Worker", note("signed by the Worker"), false);
  await send("signed by a producer", genuine);
  let e = await eventually(base, "queue: genuine messages stored", (e) => e.queue.stored === 2);
  ok("queue: genuine messages (signed by the Worker, and by another producer) are stored");

  // Every attack at once; each must end acknowledged, counted once, never stored.
  const sealed = envelope(queueKey, QUEUE, note(`tampered-${marker}`));
  const tampered = JSON.stringify({ ...JSON.parse(sealed), body: note(`tampered-${marker}!`) });
  const [a, b] = [envelope(queueKey, QUEUE, note(`a-${marker}`)), envelope(queueKey, QUEUE, note(`b-${marker}`))].map((x) => JSON.parse(x));
  const attacks = [
    ["a tampered body", tampered],
    ["bodies swapped between two valid envelopes (1)", JSON.stringify({ token: a.token, body: b.body })],
    ["bodies swapped between two valid envelopes (2)", JSON.stringify({ token: b.token, body: a.body })],
    ["an envelope for another queue", envelope(queueKey, "other-queue", note(`other-${marker}`))],
    ["a key id of the ring with another secret", envelope({ kid: queueKey.kid, secret: hmacKey("x").secret }, QUEUE, note(`forged-${marker}`))],
    ["a key the ring does not have", envelope(hmacKey("q9"), QUEUE, note(`unknown-${marker}`))],
    ["an expired envelope", envelope(queueKey, QUEUE, note(`expired-${marker}`), now() - 5)],
    ["the genuine envelope replayed", genuine],
    ["no envelope at all", `garbage-${marker}`],
    ["a genuine envelope of an unknown message", envelope(queueKey, QUEUE, JSON.stringify({ kind: "NOT A KIND", text: marker }))],
  ];
  for (const [name, body] of attacks) await send(name, body);
  // A genuine message whose storage step fails twice: retried, then stored once.
  await send("a genuine message whose storage fails twice", envelope(queueKey, QUEUE, note("stored on the third attempt", { fail_first: 2 })));
  const expected = { bad_signature: 2, body_mismatch: 3, expired: 1, invalid_payload: 1, malformed: 1, replayed: 1, unknown_key: 1 };
  const counted = (e) => Object.entries(expected).every(([k, n]) => (e.queue.rejected[k] || 0) >= n);
  e = await eventually(base, "queue: every attack counted, the flaky message stored", (e) => counted(e) && e.queue.stored === 3);
  // One more round trip through the queue: a retried refusal would have come back by now.
  await send("a last genuine message", envelope(queueKey, QUEUE, note("last")));
  e = await eventually(base, "queue: the last message stored", (e) => e.queue.stored === 4);
  if (JSON.stringify(e.queue.rejected) !== JSON.stringify(expected)) {
    fail(`queue: refusals counted ${JSON.stringify(e.queue.rejected)}, expected exactly ${JSON.stringify(expected)} (a refused message was retried, or missed)`);
  }
  ok(`queue: 10 attacks each acknowledged and counted once, never retried: ${JSON.stringify(expected)}`);
  if (e.queue.records.some((r) => r.text.includes(marker))) fail(`queue: an attack was stored: ${JSON.stringify(e.queue.records)}`);
  if (e.queue.stored !== 4) fail(`queue: ${e.queue.stored} records stored, expected 4`);
  ok("queue: nothing of the attacks reached storage (4 genuine records)");
  const flaky = e.queue.records.filter((r) => r.text === "stored on the third attempt");
  if (flaky.length !== 1 || e.queue.storage_failures !== 2) {
    fail(`queue: the flaky message was stored ${flaky.length} times after ${e.queue.storage_failures} storage failures, expected once after 2`);
  }
  if (!flaky[0].by.startsWith(`signed:queue:${QUEUE}:`)) fail(`queue: stored as ${flaky[0].by}`);
  ok("queue: a genuine message whose storage failed was retried (2 failures) and stored once");
  const log = server.log();
  if (log.includes(marker)) fail("queue: a message's text reached the Worker's log");
  if (log.includes(JSON.parse(genuine).token)) fail("queue: an envelope's token reached the Worker's log");
  const rejectedLines = log.split("\n").filter((l) => l.includes('"outcome":"rejected"') && l.includes('"via":"queue"'));
  if (rejectedLines.length !== 10) fail(`queue: ${rejectedLines.length} rejections logged, expected 10`);
  for (const code of Object.keys(expected)) {
    if (!rejectedLines.some((l) => l.includes(`"code":"${code}"`))) fail(`queue: no rejection logged with code ${code}`);
  }
  ok("queue: each rejection logged as one JSON line with its code, no message text, no token");
  console.log(`e2e: queue: 15 messages through the local queue in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

// Workers RPC: a second Worker (caller/index.js) calls record_note on the Rust Worker through a
// service binding, in one Miniflare instance.
async function rpcCases(bindings) {
  const worker = miniflareWorker({ ...bindings, ZTGATE_RPC_KEYS: `${rpcKey.kid}:${rpcKey.secret}`, ZTGATE_QUEUE_KEYS: `${queueKey.kid}:${queueKey.secret}` });
  const mf = new Miniflare({
    cf: false,
    workers: [
      { name: "ztgate-worker-example", ...worker },
      {
        name: "caller",
        modules: true,
        scriptPath: path.join(here, "caller/index.js"),
        compatibilityDate: "2026-04-01",
        serviceBindings: { ZTGATE: "ztgate-worker-example" },
      },
    ],
  });
  try {
    const caller = await mf.getWorker("caller");
    const call = async (credential, note = "hello over RPC") => {
      const r = await caller.fetch("http://caller.local/call", { method: "POST", body: JSON.stringify({ credential, note }) });
      if (r.status !== 200) fail(`rpc: the caller answered ${r.status}: ${await r.text()}`);
      return r.json();
    };
    const notes = async () => {
      const r = await mf.dispatchFetch("http://worker.local/admin/events", { headers: { "cf-access-jwt-assertion": mint(jwks.keys[0], user()) } });
      return (await r.json()).rpc;
    };
    let count = 0;
    const rpc = async (name, credential, status, code, note) => {
      const answer = await call(credential, note);
      if (answer.status !== status || (code && answer.code !== code)) fail(`${name}: ${JSON.stringify(answer)}, expected ${status} ${code || ""}`);
      if (status === 201) count += 1;
      const stored = (await notes()).notes;
      if (stored !== count) fail(`${name}: ${stored} notes stored, expected ${count}`);
      ok(`${name} -> ${status}${code ? ` ${code}` : ""}, ${count} note(s) stored`);
      return answer;
    };
    const token = (opts = {}) => hmacToken(opts.key || rpcKey, opts.purpose || "rpc:record_note", "billing-worker", opts.expiresAt);
    const valid = await rpc("rpc: a token signed for record_note", { signed_token: token() }, 201);
    if (valid.by !== "signed:rpc:record_note:billing-worker") fail(`rpc: stored by ${valid.by}`);
    await rpc("rpc: no credential", undefined, 401, "missing_credential");
    await rpc("rpc: an empty credential object", {}, 401, "missing_credential");
    await rpc("rpc: a token signed with another secret", { signed_token: token({ key: { kid: rpcKey.kid, secret: hmacKey("x").secret } }) }, 401, "invalid_credential");
    await rpc("rpc: a token for another method", { signed_token: token({ purpose: "rpc:delete_everything" }) }, 401, "invalid_credential");
    await rpc("rpc: an expired token", { signed_token: token({ expiresAt: now() - 5 }) }, 401, "invalid_credential");
    await rpc("rpc: a queue envelope's token", { signed_token: JSON.parse(envelope(queueKey, QUEUE, "{}")).token }, 401, "invalid_credential");
    await rpc("rpc: a token that is not one", { signed_token: "v2.garbage&token=x" }, 401, "invalid_credential");
    await rpc("rpc: two credentials at once", { signed_token: token(), access_jwt: mint(jwks.keys[0], service()) }, 401, "invalid_credential");
    await rpc("rpc: an Access JWT for another audience", { access_jwt: mint(jwks.keys[0], { ...service(), aud: ["not-ours"] }) }, 401, "invalid_token");
    await rpc("rpc: an admin's Access JWT (a person, not a service): storage refuses", { access_jwt: mint(jwks.keys[0], user()) }, 403, "forbidden");
    await rpc("rpc: a valid token with a note over 1 KiB", { signed_token: token() }, 400, "invalid_note", "x".repeat(1025));
    await rpc("rpc: an Access service token", { access_jwt: mint(jwks.keys[0], service()) }, 201);
    // The same pipeline as HTTP: a token revoked by its id is refused over RPC too.
    const revocable = token();
    await rpc("rpc: a token about to be revoked", { signed_token: revocable }, 201);
    const id = revocable.split(".")[3];
    const revoke = await mf.dispatchFetch("http://worker.local/admin/revocations", {
      method: "POST",
      headers: { "cf-access-jwt-assertion": mint(jwks.keys[0], user()), "content-type": "application/json" },
      body: JSON.stringify({ kind: "hmac_token", id }),
    });
    await expect("rpc: an admin revokes that token by its id", revoke, 201);
    await rpc("rpc: the revoked token", { signed_token: revocable }, 401, "revoked");
    // RPC only: HTTP has no route to the method.
    await expect("rpc: POST /rpc/record_note over HTTP", await mf.dispatchFetch("http://worker.local/rpc/record_note", { method: "POST", body: "{}" }), 403, { code: "no_policy" });
    const last = await notes();
    if (last.notes !== 3 || last.last.by !== "signed:rpc:record_note:billing-worker") fail(`rpc: notes ${JSON.stringify(last)}`);
    ok("rpc: 3 notes stored, each by a valid signed token or service token");
  } finally {
    await mf.dispose();
  }
}

// --- main ------------------------------------------------------------------------------------
// --- GET /admin/ws ---------------------------------------------------------------------------
/// Opens a socket: resolves with it, or with the refusal's status and JSON body.
function openSocket(base, token) {
  const headers = token ? { "cf-access-jwt-assertion": token } : {};
  const socket = new WebSocket(`${base.replace("http://", "ws://")}/admin/ws`, { headers });
  const queue = [];
  const waiters = [];
  const push = (item) => (waiters.length ? waiters.shift()(item) : queue.push(item));
  socket.on("message", (data) => push({ message: data.toString() }));
  socket.on("close", (code, reason) => push({ close: code, reason: reason.toString() }));
  const next = (seconds = 20) =>
    new Promise((resolve, reject) => {
      if (queue.length) return resolve(queue.shift());
      const timer = setTimeout(() => reject(new Error(`nothing from the socket within ${seconds}s`)), seconds * 1000);
      waiters.push((item) => (clearTimeout(timer), resolve(item)));
    });
  return new Promise((resolve) => {
    socket.once("open", () => resolve({ socket, next }));
    socket.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ refused: res.statusCode, json: JSON.parse(body || "{}") }));
    });
    socket.once("error", (e) => resolve({ error: e.message }));
  });
}

async function wsCases(base) {
  const k1 = jwks.keys[0];
  const refused = async (name, token, status, code) => {
    const r = await openSocket(base, token);
    if (r.socket) fail(`${name}: the upgrade was accepted`);
    if (r.refused !== status || r.json.code !== code) fail(`${name}: ${JSON.stringify(r)}, expected ${status} ${code}`);
    ok(`${name} -> ${status} ${code}, no socket`);
  };
  await refused("ws: no credential", null, 401, "missing_credential");
  await refused("ws: expired token", mint(k1, user(ADMIN, { exp: now() - 3600 })), 401, "token_expired");
  await refused("ws: email not allowed", mint(k1, user("mallory@acme.test")), 403, "forbidden");

  const talk = async (s, text) => {
    s.socket.send(text);
    return s.next();
  };
  const open = await openSocket(base, mint(k1, user(ADMIN, { sub: `ws-${crypto.randomUUID()}` })));
  if (!open.socket) fail(`ws: a valid admin was refused: ${JSON.stringify(open)}`);
  for (const text of ["hello", "a second, longer message"]) {
    const reply = await talk(open, text);
    const json = JSON.parse(reply.message ?? "{}");
    if (json.principal !== `user:${ADMIN}` || json.bytes !== text.length) fail(`ws: reply ${JSON.stringify(reply)}`);
  }
  ok("ws: an open socket answers each message with the caller's id");
  open.socket.close(1000);

  // A token that expires 3 s from now: the socket is closed then, without a word from the client.
  const short = await openSocket(base, mint(k1, user(ADMIN, { exp: now() + 3, sub: `ws-${crypto.randomUUID()}` })));
  if (!short.socket) fail(`ws: a short token was refused: ${JSON.stringify(short)}`);
  const expired = await short.next(20);
  if (expired.close !== 4401 || expired.reason !== "token_expired") fail(`ws: expiry: ${JSON.stringify(expired)}`);
  ok("ws: the socket is closed with 4401 token_expired when its token expires");

  // A login revoked while its socket is open (ZTGATE_WS_RECHECK=1): closed by the next check.
  const sub = `ws-revoked-${crypto.randomUUID()}`;
  const doomed = await openSocket(base, mint(k1, user(ADMIN, { sub })));
  const bystander = await openSocket(base, mint(k1, user(ADMIN, { sub: `ws-${crypto.randomUUID()}` })));
  if (!doomed.socket || !bystander.socket) fail("ws: a valid admin was refused");
  await talk(doomed, "before");
  const revoke = await fetch(`${base}/admin/revocations`, {
    method: "POST",
    headers: { "cf-access-jwt-assertion": mint(k1, user(ADMIN, { sub: `ws-admin-${crypto.randomUUID()}` })), "content-type": "application/json" },
    body: JSON.stringify({ kind: "access_sub", id: sub }),
  });
  if (revoke.status !== 201) fail(`ws: revoke: ${revoke.status} ${await revoke.text()}`);
  const closed = await doomed.next(20);
  if (closed.close !== 4401 || closed.reason !== "revoked") fail(`ws: revocation: ${JSON.stringify(closed)}`);
  ok("ws: the socket of a login revoked while open is closed with 4401 revoked");
  const still = JSON.parse((await talk(bystander, "still here")).message ?? "{}");
  if (still.principal !== `user:${ADMIN}`) fail(`ws: another login's socket was affected: ${JSON.stringify(still)}`);
  ok("ws: another login's socket stays open");
  bystander.socket.close(1000);
  await refused("ws: the revoked login cannot open a new socket", mint(k1, user(ADMIN, { sub })), 401, "revoked");
}

async function main() {
  jwks.keys.push(makeKey("k1"));
  const jwksPort = await listen(jwksServer);
  const bindings = {
    ZTGATE_TEAM_DOMAIN: TEAM,
    ZTGATE_AUD: AUD,
    ZTGATE_ADMIN_EMAILS: ADMIN,
    ZTGATE_SERVICE_TOKENS: SERVICE,
    ZTGATE_CERTS_URL: `http://127.0.0.1:${jwksPort}/cdn-cgi/access/certs`,
    // Decisions are logged by the run-local.sh case below; Miniflare cases and timings stay quiet.
    ZTGATE_LOG: "warn",
    // Every request goes through the Durable Object's failure budget; the budget itself is
    // proven by the fleet-state cases (3/600s), so here it is never reached.
    ZTGATE_AUTH_FAILURES: "1000/60s",
  };
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  console.log(`e2e: JWKS on 127.0.0.1:${jwksPort}; serving the Worker with run-local.sh on ${base}`);
  // wrangler dev keeps its Cache API storage across runs (.wrangler/state): a certs URL of this
  // run only, so that a copy left by an earlier run (other keys, same port) is never found. The
  // Durable Object's storage goes to a directory of this run only.
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "ztgate-e2e-state-"));
  const server = serveWorker({
    ...bindings,
    ZTGATE_CERTS_URL: `${bindings.ZTGATE_CERTS_URL}?run=${crypto.randomUUID()}`,
    ZTGATE_LISTEN: `127.0.0.1:${port}`,
    ZTGATE_LOG: "info",
    ZTGATE_PERSIST_TO: stateDir,
    ZTGATE_QUEUE_KEYS: `${queueKey.kid}:${queueKey.secret}`,
    ZTGATE_TEST_SCHEDULED: "1",
    ZTGATE_WS_RECHECK: "1",
  });
  try {
    await waitUp(base, server);
    await accessCases(base);
    await logCases(base, server);
    await scheduledCases(base, server);
    await queueCases(base, server);
    await wsCases(base);
  } finally {
    await server.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
  await fleetStateCases(bindings);
  await rpcCases(bindings);

  console.log("e2e: Miniflare (dispatchFetch with request.cf)");
  jwks.keys.splice(1);
  const webhookSecret = `whsec_${crypto.randomBytes(24).toString("base64")}`;
  const mf = miniflare({ ...bindings, ZTGATE_WEBHOOK_SECRET: webhookSecret });
  try {
    await concurrentColdRequests(mf, jwks.keys[0]);
    await mtlsCases(mf);
    await webhookCases(mf, webhookSecret, "Worker secret");
  } finally {
    await mf.dispose();
  }
  const storeSecret = `whsec_${crypto.randomBytes(24).toString("base64")}`;
  const store = new Miniflare({
    ...miniflareOptions(bindings),
    secretsStoreSecrets: { ZTGATE_WEBHOOK_SECRET_STORE: { store_id: "e2e-store", secret_name: "webhook" } },
  });
  try {
    await (await store.getSecretsStoreSecretAPI("ZTGATE_WEBHOOK_SECRET_STORE"))().create(storeSecret);
    await webhookCases(store, storeSecret, "Secrets Store");
  } finally {
    await store.dispose();
  }
  await stateUnavailableCases(bindings, jwks.keys[0]);
  await stateBoundsCases(bindings, jwks.keys[0]);
  await edgeCacheCases(bindings);
  await measure(bindings, jwks.keys[0]);
  console.log(`e2e: OK, ${passed} cases in ${((Date.now() - started) / 1000).toFixed(1)}s`);
}

main()
  .catch((e) => {
    if (!process.exitCode) console.error(e);
    process.exitCode = 1;
  })
  .finally(() => jwksServer.close());
