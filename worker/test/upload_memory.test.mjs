// 150 MiB through the Worker's upload paths into local R2 (`wrangler dev --local`), generated on
// the fly, while the resident memory (RSS) of every workerd process under wrangler is watched:
// a Worker that read the body into memory would grow by at least 150 MiB; a streaming one by a
// few MiB of buffers. Both paths: the browser's (R2 multipart upload, 15 streamed parts of
// 10 MiB) and the gateway's (one streamed 150 MiB PUT to a signed result URL). Each object is
// then read back streamed, and its size and SHA-256 checked. And POST /api/verify: a 95 MiB file
// goes into R2 (hashed on the way) and on to a stand-in gateway here (node:http), which checks
// that the streamed form's SHA-256 is the signed one and that the file inside is whole.
import { spawn } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const WORKER = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PORT = 20000 + Math.floor(Math.random() * 20000);
const GATEWAY_PORT = PORT + 1;
const SECRET = "memory-test-" + PORT;
const MiB = 1048576;
const SIZE = 150 * MiB;
/** Under the Worker's MAX_VERIFY_BYTES (100 MB). */
const VERIFY_SIZE = 95 * MiB;
/** Allowed growth of a workerd process's RSS over its idle level while 150 MiB pass, MiB. */
const MAX_GROWTH_MIB = 60;
// WRANGLER_HIDE_BANNER: the banner asks the npm registry for a newer wrangler; not here.
const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_HIDE_BANNER: "true" };
delete env.CLOUDFLARE_API_TOKEN;
let wrangler, persist, gateway;

/** A stand-in for the gateway's POST /v1/verify that holds nothing: it hashes the body as it
 * streams (and, apart, the file inside the form: after the part's header, before the closing
 * boundary) and answers what it saw: whether the signature and X-Faceswap-Content-SHA256 match
 * the body, its length against Content-Length, the file's length and SHA-256. */
function startGateway() {
  gateway = http.createServer((req, res) => {
    const boundary = (req.headers["content-type"] ?? "").match(/boundary=(.+)$/)?.[1] ?? "";
    const closing = Buffer.from(`\r\n--${boundary}--\r\n`);
    const whole = createHash("sha256"), file = createHash("sha256");
    let head = Buffer.alloc(0), partHeader = null, held = Buffer.alloc(0), total = 0, fileBytes = 0;
    req.on("data", (chunk) => {
      whole.update(chunk);
      total += chunk.length;
      if (partHeader === null) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        partHeader = head.subarray(0, end).toString("latin1");
        chunk = head.subarray(end + 4);
      }
      const buf = Buffer.concat([held, chunk]); // the last bytes may be the closing boundary: held back
      const keep = Math.max(0, buf.length - closing.length);
      file.update(buf.subarray(0, keep));
      fileBytes += keep;
      held = Buffer.from(buf.subarray(keep));
    });
    req.on("end", () => {
      const sha = whole.digest("hex"), ts = req.headers["x-faceswap-timestamp"];
      const signature = createHmac("sha256", SECRET).update(`POST\n${req.url}\n${ts}\n${sha}`).digest("hex");
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ path: req.url, signed: req.headers["x-faceswap-signature"] === signature,
        hashed: req.headers["x-faceswap-content-sha256"] === sha, total, declared: Number(req.headers["content-length"]),
        closed: held.equals(closing), partHeader, fileBytes, fileSha: file.digest("hex") }));
    });
  });
  return new Promise((ok) => gateway.listen(GATEWAY_PORT, "127.0.0.1", ok));
}

before(async () => {
  persist = mkdtempSync(join(tmpdir(), "fs-r2-mem-"));
  await startGateway();
  wrangler = spawn("npx", ["wrangler", "dev", "--local", "--ip", "127.0.0.1", "--port", String(PORT),
    "--persist-to", persist, "--var", `GATEWAY_SECRET:${SECRET}`, "--var", `GATEWAY_URL:http://127.0.0.1:${GATEWAY_PORT}`,
    "--show-interactive-dev-session=false"],
  { cwd: WORKER, env, stdio: "ignore", detached: true });
  const end = Date.now() + 60_000;
  for (;;) {
    try { if ((await fetch(`http://127.0.0.1:${PORT}/`)).ok) break; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error("wrangler dev did not start in 60 s");
    await new Promise((r) => setTimeout(r, 300));
  }
});

after(() => {
  if (wrangler) try { process.kill(-wrangler.pid, "SIGTERM"); } catch { /* gone */ }
  if (persist) rmSync(persist, { recursive: true, force: true });
  gateway?.close();
});

/** The workerd processes under ``root`` (wrangler runs two: its proxy, and the Worker with R2). */
function workerdPids(root) {
  const children = new Map();
  for (const d of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch { /* exited */ }
  }
  const found = [], todo = [root];
  while (todo.length) {
    const pid = todo.pop();
    for (const c of children.get(pid) ?? []) {
      todo.push(c);
      try { if (readFileSync(`/proc/${c}/comm`, "utf8").trim() === "workerd") found.push(c); } catch { /* exited */ }
    }
  }
  return found;
}

/** kB of VmRSS or VmHWM (the peak since start, or since the last reset). */
const status = (pid, field) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`${field}:\\s+(\\d+)`))[1]);

/** Run ``work`` while sampling the RSS of ``pids`` every 10 ms; per pid: idle RSS before, the
 * peak during (the larger of the samples and VmHWM, reset first where the kernel allows), MiB. */
async function measure(pids, work) {
  const idle = Object.fromEntries(pids.map((p) => [p, status(p, "VmRSS")]));
  let hwmReset = true;
  for (const p of pids) {
    try { writeFileSync(`/proc/${p}/clear_refs`, "5"); } catch { hwmReset = false; }
  }
  const peak = { ...idle };
  const timer = setInterval(() => { for (const p of pids) peak[p] = Math.max(peak[p], status(p, "VmRSS")); }, 10);
  const t0 = Date.now();
  try { await work(); } finally { clearInterval(timer); }
  const seconds = (Date.now() - t0) / 1000;
  return pids.map((p) => {
    const top = Math.max(peak[p], hwmReset ? status(p, "VmHWM") : 0);
    return { pid: p, idleMiB: +(idle[p] / 1024).toFixed(1), peakMiB: +(top / 1024).toFixed(1),
      growthMiB: +((top - idle[p]) / 1024).toFixed(1), hwmReset, seconds };
  });
}

/** Send ``size`` random bytes as the body of one request (Content-Length set, written in 1 MiB
 * chunks as the socket drains; ``also``, a running hash, is fed them too); resolves to
 * [status, JSON answer, hex SHA-256 of what was sent]. */
function sendGenerated(method, path, size, also = null, headers = {}) {
  return new Promise((ok, fail) => {
    const hash = createHash("sha256");
    const req = http.request({ host: "127.0.0.1", port: PORT, method, path, headers: { "Content-Length": String(size), ...headers } },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c) => { text += c; }).on("end", () => ok([res.statusCode, JSON.parse(text), hash.digest("hex")]));
      });
    req.on("error", fail);
    let left = size;
    const pump = () => {
      while (left > 0) {
        const chunk = randomBytes(Math.min(MiB, left));
        left -= chunk.length;
        hash.update(chunk);
        also?.update(chunk);
        if (!req.write(chunk)) { req.once("drain", pump); return; }
      }
      req.end();
    };
    pump();
  });
}

/** Read ``path`` as a stream; [bytes, hex SHA-256]. */
async function readBack(path) {
  const res = await fetch(`http://127.0.0.1:${PORT}${path}`);
  assert.equal(res.status, 200, path);
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of res.body) { hash.update(chunk); bytes += chunk.length; }
  return [bytes, hash.digest("hex")];
}

function signed(method, key) {
  const expires = Math.floor(Date.now() / 1000) + 600;
  const sig = createHmac("sha256", SECRET).update(`${method}\n/api/media/${key}\n${expires}`).digest("hex");
  return `/api/media/${key}?expires=${expires}&signature=${sig}`;
}

/** Upload ``size`` generated bytes in parts; [upload id, hex SHA-256 of the whole]. */
async function multipartUpload(size) {
  const post = (path, body) => fetch(`http://127.0.0.1:${PORT}${path}`, { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" } }).then(async (r) => [r.status, await r.json()]);
  const [created, up] = await post("/api/uploads", { size });
  assert.equal(created, 201, JSON.stringify(up));
  const q = `?uploadId=${encodeURIComponent(up.uploadId)}`;
  const hash = createHash("sha256"), parts = [];
  for (let n = 1; n <= up.parts; n++) {
    const [st, part] = await sendGenerated("PUT", `/api/uploads/${up.id}/parts/${n}${q}`,
      Math.min(up.partBytes, size - (n - 1) * up.partBytes), hash);
    assert.equal(st, 200, JSON.stringify(part));
    parts.push(part);
  }
  const [done, body] = await post(`/api/uploads/${up.id}/complete${q}`, { parts });
  assert.equal(done, 200, JSON.stringify(body));
  assert.equal(body.size, size);
  return [up.id, hash.digest("hex")];
}

test("150 MiB uploads stream through the Worker into R2, a 95 MiB file to check through R2 to the gateway: workerd's RSS grows far less than the body", async () => {
  const pids = workerdPids(wrangler.pid);
  assert.ok(pids.length >= 1, "no workerd process found under wrangler");
  await multipartUpload(2 * MiB); // warm up both paths once, so that code loading is not counted
  await sendGenerated("PUT", signed("PUT", `results/${crypto.randomUUID()}.mp4`), 2 * MiB);

  // The browser's path: R2 multipart upload, 15 parts of 10 MiB, each streamed through.
  let id, sha;
  const parts = await measure(pids, async () => { [id, sha] = await multipartUpload(SIZE); });
  // Read back as the gateway does (signed GET, streamed): the very bytes that were sent.
  let got;
  const partsRead = await measure(pids, async () => { got = await readBack(signed("GET", `uploads/${id}`)); });
  assert.deepEqual(got, [SIZE, sha], "the stored upload differs");

  // The gateway's path: one 150 MiB PUT to a signed result URL, then GET /api/results.
  const name = `${crypto.randomUUID()}.mp4`;
  let put;
  const single = await measure(pids, async () => { put = await sendGenerated("PUT", signed("PUT", `results/${name}`), SIZE); });
  assert.equal(put[0], 201, JSON.stringify(put[1]));
  assert.equal(put[1].size, SIZE);
  let back;
  const read = await measure(pids, async () => { back = await readBack(`/api/results/${name}`); });
  assert.deepEqual(back, [SIZE, put[2]], "the stored result differs from what was sent");

  // A file checked: POST /api/verify, raw body, into R2 (hashed on the way), then streamed from
  // R2 to the (stand-in) gateway inside a signed form.
  await sendGenerated("POST", "/api/verify", 2 * MiB, null, { "X-File-Name": "warm.mp4" });
  let checked;
  const verify = await measure(pids, async () => {
    checked = await sendGenerated("POST", "/api/verify", VERIFY_SIZE, null, { "X-File-Name": "big.mp4" });
  });
  const [vStatus, seen, vSha] = checked;
  assert.equal(vStatus, 200, JSON.stringify(seen));
  assert.equal(seen.path, "/v1/verify");
  assert.ok(seen.signed && seen.hashed, `the signature does not cover the streamed body: ${JSON.stringify(seen)}`);
  assert.equal(seen.total, seen.declared, "the form's length is not its Content-Length");
  assert.ok(seen.closed, "the form's closing boundary is missing");
  assert.match(seen.partHeader, /name="file"; filename="big\.mp4"/);
  assert.deepEqual([seen.fileBytes, seen.fileSha], [VERIFY_SIZE, vSha], "the file inside the form differs from what was sent");

  const phases = { multipart: parts, multipartRead: partsRead, singlePut: single, readBack: read, verify };
  for (const [what, rows] of Object.entries(phases)) {
    for (const r of rows) {
      console.log(`${what.padEnd(13)} workerd ${r.pid}: idle ${r.idleMiB} MiB, peak ${r.peakMiB} MiB, +${r.growthMiB} MiB `
        + `while ${(what === "verify" ? VERIFY_SIZE : SIZE) / MiB} MiB passed in ${r.seconds} s`
        + `${r.hwmReset ? "" : " (VmHWM not resettable: sampled only)"}`);
    }
  }
  for (const [what, rows] of Object.entries(phases)) {
    for (const r of rows) {
      assert.ok(r.growthMiB < MAX_GROWTH_MIB, `${what}: workerd ${r.pid} grew by ${r.growthMiB} MiB (limit ${MAX_GROWTH_MIB})`);
    }
  }
});
