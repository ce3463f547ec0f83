// The servers of the browser tests (e2e.test.mjs, live.test.mjs), each file its own set on
// random loopback ports: Triton (tiny stand-ins) + the gateway (Python), signed with a secret,
// and the Worker under `wrangler dev --local` (local R2 in a temporary folder). Also Chromium's
// flags. Nothing here phones home: wrangler's metrics and Cloudflare fetches are off, Chromium
// resolves no names but loopback.
import { spawn, spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { existsSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, "..", "..");
export const PY = join(ROOT, ".venv", "bin", "python");
export const SHARED = process.env.FACESWAP_SHARED_IMAGES ?? [resolve(ROOT, "..", "shared", "images"), "/work/shared/images"]
  .find((p) => existsSync(p));
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const BASE = 20000 + Math.floor(Math.random() * 20000);
export const PORTS = { http: BASE, grpc: BASE + 1, metrics: BASE + 2, gateway: BASE + 3, worker: BASE + 4 };
export const SECRET = "e2e-secret-" + BASE;
export const TMP = mkdtempSync(join(tmpdir(), "fs-e2e-"));
export const WORKER_URL = `http://127.0.0.1:${PORTS.worker}`;
export const GATEWAY_URL = `http://127.0.0.1:${PORTS.gateway}`;
// WRANGLER_HIDE_BANNER: wrangler's banner asks the npm registry for a newer version; not here.
export const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_HIDE_BANNER: "true",
  FACESWAP_STANDIN_SIZE: "tiny", FACESWAP_GATEWAY_HMAC_SECRET: SECRET,
  FACESWAP_GATEWAY_STORE_PATH: join(TMP, "faces.sqlite3"), FACESWAP_GATEWAY_JOBS_DIR: join(TMP, "jobs"),
  // The gateway fetches inputs from and writes results to the Worker's signed media URLs only.
  FACESWAP_GATEWAY_MEDIA_URL_PREFIXES: `${WORKER_URL}/api/media/` };
delete env.CLOUDFLARE_API_TOKEN;
const serverArgs = ["-m", "launch.server", "--http-port", String(PORTS.http), "--grpc-port", String(PORTS.grpc),
  "--metrics-port", String(PORTS.metrics), "--gateway-port", String(PORTS.gateway)];
let wrangler, logFd;
const LOG = () => (logFd ??= openSync(process.env.FACESWAP_E2E_WRANGLER_LOG, "a"));

export const BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"];

export async function waitFor(url, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { if ((await fetch(url)).ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${url} did not answer in ${ms} ms`);
}

/** Start Triton + gateway, then the Worker (for `before`). */
export async function startStack() {
  assert.ok(SHARED, "real photos are needed: provide ../shared/images or set FACESWAP_SHARED_IMAGES");
  assert.ok(existsSync(CHROMIUM), `Chromium is needed at ${CHROMIUM}: apt-get install chromium (make setup-web does)`);
  assert.ok(existsSync(PY), "the Python environment is needed: run `make setup` first");
  const started = spawnSync(PY, [...serverArgs.slice(0, 2), "start", ...serverArgs.slice(2)],
    { cwd: ROOT, env, encoding: "utf8", timeout: 300_000 });
  assert.equal(started.status, 0, `Triton/gateway did not start:\n${started.stdout}\n${started.stderr}`);
  const persist = join(TMP, "r2");
  wrangler = spawn("npx", ["wrangler", "dev", "--local", "--ip", "127.0.0.1", "--port", String(PORTS.worker),
    "--persist-to", persist, "--var", `GATEWAY_URL:${GATEWAY_URL}`, "--var", `GATEWAY_SECRET:${SECRET}`,
    "--show-interactive-dev-session=false"], { cwd: join(ROOT, "worker"), env, detached: true,
    // FACESWAP_E2E_WRANGLER_LOG=<file>: wrangler's output there (else dropped).
    stdio: process.env.FACESWAP_E2E_WRANGLER_LOG ? ["ignore", LOG(), LOG()] : "ignore" });
  await waitFor(`${WORKER_URL}/`, 60_000);
}

/** Stop only the gateway (Triton and the Worker stay): the service is then down behind the Worker. */
export function stopGateway() {
  const r = spawnSync(PY, ["-c", "import sys; from launch.server import stop_gateway; print(stop_gateway(int(sys.argv[1])))",
    String(PORTS.gateway)], { cwd: ROOT, env, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.stdout.trim(), "True", `the gateway was not stopped: ${r.stdout}${r.stderr}`);
}

/** Stop everything started here and delete the temporary folder (for `after`). */
export function stopStack() {
  if (wrangler) try { process.kill(-wrangler.pid, "SIGTERM"); } catch { /* gone */ }
  spawnSync(PY, [...serverArgs.slice(0, 2), "stop", ...serverArgs.slice(2)], { cwd: ROOT, env, timeout: 120_000 });
  rmSync(TMP, { recursive: true, force: true });
}

/** The gateway's POST /v1/verify called directly, signed as the Worker signs (HMAC over method,
 * path, timestamp and the form's SHA-256): its JSON report on ``bytes`` (named ``name``). */
export async function verifyAtGateway(bytes, name) {
  const fd = new FormData();
  fd.append("file", new Blob([bytes]), name);
  const form = new Request("http://form.local/", { method: "POST", body: fd });
  const body = Buffer.from(await form.arrayBuffer());
  const ts = String(Math.floor(Date.now() / 1000));
  const sha = createHash("sha256").update(body).digest("hex");
  const res = await fetch(`${GATEWAY_URL}/v1/verify`, { method: "POST", body, headers: {
    "Content-Type": form.headers.get("content-type"), "X-Faceswap-Timestamp": ts, "X-Faceswap-Content-SHA256": sha,
    "X-Faceswap-Signature": createHmac("sha256", SECRET).update(`POST\n/v1/verify\n${ts}\n${sha}`).digest("hex") } });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}
