import { createScheduledController, env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import worker from "../src/index";
import type { AppEnv } from "../src/env";

const E = env as unknown as AppEnv;
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4]);
const JPEG = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70, 73, 70]);
const MP4 = new Uint8Array([0, 0, 0, 24, 102, 116, 121, 112, 105, 115, 111, 109, 0, 0, 2, 0]);

// Every call comes from its own client address unless the test names one, so the per-client
// rate limits (shared by all tests in this file) only count where a test means them to.
let clients = 0;
const nextClient = () => { clients++; return `10.0.${Math.floor(clients / 250)}.${clients % 250 + 1}`; };
function call(path: string, init?: RequestInit & { client?: string }) {
  const headers = new Headers(init?.headers);
  if (!headers.has("CF-Connecting-IP")) headers.set("CF-Connecting-IP", init?.client ?? nextClient());
  return worker.fetch(new Request(`http://worker.test${path}`, { ...init, headers }), E);
}
const uploadKeys = async () => (await E.FILES.list({ prefix: "uploads/" })).objects.map((o) => o.key);

function form(parts: Record<string, Uint8Array | string>): FormData {
  const fd = new FormData();
  for (const [k, v] of Object.entries(parts)) fd.append(k, typeof v === "string" ? v : new File([v], `${k}.bin`));
  return fd;
}

function mockGateway(handler: (url: string, init: RequestInit) => Response | Promise<Response>) {
  return vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => handler(String(input), init ?? {}));
}

const hex = (b: ArrayBuffer) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
/** hex HMAC-SHA256 with the test secret, computed here (not with the Worker's code). */
async function hmac(msg: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode("unit-test-secret"),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(msg)));
}
/** A media URL signed as the contract says: HMAC over METHOD \n /api/media/<key> \n expires. */
async function signed(method: string, key: string, expires = Math.floor(Date.now() / 1000) + 600): Promise<string> {
  return `/api/media/${key}?expires=${expires}&signature=${await hmac(`${method}\n/api/media/${key}\n${expires}`)}`;
}
const pathOf = (url: string) => { const u = new URL(url); return u.pathname + u.search; };

// R2 is shared by the tests of this file: each starts without uploads.
afterEach(async () => {
  vi.restoreAllMocks();
  const keys = await uploadKeys();
  if (keys.length) await E.FILES.delete(keys);
});

describe("routing", () => {
  it("serves the page", async () => {
    const res = await call("/");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/html");
    expect(await res.text()).toContain("<button id=\"swap\"");
  });
  it("404 for unknown paths, 405 with Allow for wrong methods", async () => {
    const nf = await call("/nope");
    expect(nf.status).toBe(404);
    expect((await nf.json() as { code: string }).code).toBe("not_found");
    const na = await call("/api/swap");
    expect(na.status).toBe(405);
    expect(na.headers.get("Allow")).toBe("POST");
  });
});

describe("POST /api/swap", () => {
  it("signs the gateway call, sends the photos in it (not via R2), and streams the result into R2", async () => {
    let duringCall: string[] = [];
    const spy = mockGateway(async (url, init) => {
      expect(url).toBe("http://gateway.test/v1/swap");
      duringCall = await uploadKeys();
      const headers = new Headers(init.headers);
      const ts = headers.get("X-Faceswap-Timestamp")!;
      const body = new Uint8Array(init.body as ArrayBuffer);
      const bodyHash = hex(await crypto.subtle.digest("SHA-256", body));
      expect(headers.get("X-Faceswap-Content-SHA256")).toBe(bodyHash);
      expect(headers.get("X-Faceswap-Signature")).toBe(await hmac(`POST\n/v1/swap\n${ts}\n${bodyHash}`));
      const sent = await new Request("http://x/", { method: "POST", body, headers: { "Content-Type": headers.get("Content-Type")! } }).formData();
      expect([(sent.get("source") as File).name, (sent.get("target") as File).name]).toEqual(["source.jpg", "target.png"]);
      return new Response(PNG, { headers: { "Content-Type": "image/png", "X-Faces-Detected": "2", "X-Faces-Swapped": "2",
        "X-Faces": "[]", "X-Stand-In-Models": "inswapper_128" } });
    });
    const res = await call("/api/swap", { method: "POST", body: form({ source: JPEG, target: PNG }) });
    expect(res.status).toBe(200);
    const j = await res.json() as { result: string; facesSwapped: number; standInModels: string[] };
    expect(j.facesSwapped).toBe(2);
    expect(j.standInModels).toEqual(["inswapper_128"]);
    expect(spy).toHaveBeenCalledOnce();
    const got = await call(j.result);
    expect(got.status).toBe(200);
    expect(got.headers.get("Content-Type")).toBe("image/png");
    expect(new Uint8Array(await got.arrayBuffer())).toEqual(PNG);
    expect(duringCall).toEqual([]); // photos travel in the signed request only: R2 holds no copy
    expect(await uploadKeys()).toEqual([]);
  });
  it("413 for a declared body over the limit, before reading it", async () => {
    const res = await call("/api/swap", { method: "POST", headers: { "Content-Length": String(100 * 1048576) }, body: "x" });
    expect(res.status).toBe(413);
  });
  it("415 for a file that is not an image, judged from its bytes", async () => {
    const res = await call("/api/swap", { method: "POST", body: form({ source: new TextEncoder().encode("hello"), target: PNG }) });
    expect(res.status).toBe(415);
    expect((await res.json() as { message: string }).message).toContain("JPEG, PNG, WEBP");
  });
  it("BMP and TIFF photos go on as the gateway reads them, named and typed from their bytes", async () => {
    const got: string[][] = [];
    mockGateway(async (_url, init) => {
      const sent = await new Request("http://x/", { method: "POST", body: init.body as ArrayBuffer,
        headers: { "Content-Type": new Headers(init.headers).get("Content-Type")! } }).formData();
      got.push(["source", "target"].flatMap((k) => [(sent.get(k) as File).name, (sent.get(k) as File).type]));
      return new Response(PNG, { headers: { "Content-Type": "image/png" } });
    });
    const BMP = new Uint8Array([0x42, 0x4d, 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0]);
    const TIFF = new Uint8Array([0x4d, 0x4d, 0, 0x2a, 0, 0, 0, 8]);
    expect((await call("/api/swap", { method: "POST", body: form({ source: BMP, target: TIFF }) })).status).toBe(200);
    expect(got).toEqual([["source.bmp", "image/bmp", "target.tif", "image/tiff"]]);
  });
  it("400 when a file is missing", async () => {
    const res = await call("/api/swap", { method: "POST", body: form({ source: PNG }) });
    expect(res.status).toBe(400);
  });
  const swapOnce = () => call("/api/swap", { method: "POST", body: form({ source: PNG, target: PNG }) });
  it("passes the gateway's 4xx through with its code", async () => {
    mockGateway(() => Response.json({ code: "no_face_in_source", message: "No face was found in the source image." },
      { status: 422 }));
    const res = await swapOnce();
    expect(res.status).toBe(422);
    expect((await res.json() as { code: string }).code).toBe("no_face_in_source");
  });
  it("503 from the gateway is service_not_ready with Retry-After", async () => {
    mockGateway(() => Response.json({ code: "triton_unavailable" }, { status: 503, headers: { "Retry-After": "5" } }));
    const res = await swapOnce();
    expect(res.status).toBe(503);
    expect(res.headers.get("Retry-After")).toBe("5");
  });
  it("503 overloaded keeps its code and the gateway's Retry-After; 504 stays 504", async () => {
    mockGateway(() => Response.json({ code: "overloaded" }, { status: 503, headers: { "Retry-After": "1" } }));
    let res = await swapOnce();
    expect([res.status, res.headers.get("Retry-After")]).toEqual([503, "1"]);
    expect((await res.json() as { code: string }).code).toBe("overloaded");
    mockGateway(() => Response.json({ code: "deadline_exceeded" }, { status: 504 }));
    res = await swapOnce();
    expect(res.status).toBe(504);
    expect((await res.json() as { code: string }).code).toBe("deadline_exceeded");
  });
  it("an unreachable gateway is 502 gateway_unreachable", async () => {
    mockGateway(() => Promise.reject(new TypeError("connection refused")));
    const res = await swapOnce();
    expect(res.status).toBe(502);
    expect((await res.json() as { code: string }).code).toBe("gateway_unreachable");
    expect(await uploadKeys()).toEqual([]); // deleted on failure too
  });
  it("a gateway 500 is 502 gateway_error", async () => {
    mockGateway(() => new Response("boom", { status: 500 }));
    const res = await swapOnce();
    expect(res.status).toBe(502);
    expect((await res.json() as { code: string }).code).toBe("gateway_error");
  });
});

describe("signed media URLs", () => {
  const uid = () => crypto.randomUUID();
  it("GET streams an upload, HEAD gives its length; a bad, expired, re-used or out-of-prefix URL is 403", async () => {
    const key = `uploads/${uid()}`;
    await E.FILES.put(key, MP4, { httpMetadata: { contentType: "video/mp4" } });
    const url = await signed("GET", key);
    const got = await call(url);
    expect(got.status).toBe(200);
    expect(got.headers.get("Content-Type")).toBe("video/mp4");
    expect(new Uint8Array(await got.arrayBuffer())).toEqual(MP4);
    const head = await call(url, { method: "HEAD" });
    expect([head.status, head.headers.get("Content-Length")]).toEqual([200, String(MP4.length)]);
    const code = async (res: Response) => [res.status, (await res.json() as { code: string }).code];
    const bad = url.replace(/signature=(.)/, (_m, c) => `signature=${c === "0" ? "1" : "0"}`);
    expect(await code(await call(bad))).toEqual([403, "bad_media_signature"]);
    expect(await code(await call(url.replace(/expires=\d+/, "expires=99999999999")))).toEqual([403, "bad_media_signature"]);
    expect(await code(await call(url.split("?")[0]))).toEqual([403, "bad_media_signature"]);
    expect(await code(await call(await signed("GET", key, Math.floor(Date.now() / 1000) - 1)))).toEqual([403, "media_url_expired"]);
    // A GET signature does not allow a PUT to the same key (nor the other way round).
    expect(await code(await call(url, { method: "PUT", body: "x" }))).toEqual([403, "bad_media_signature"]);
    // Only uploads may be read and only results written, whoever signed.
    expect(await code(await call(await signed("GET", `results/${uid()}.mp4`)))).toEqual([403, "media_key_not_allowed"]);
    expect(await code(await call(await signed("PUT", key), { method: "PUT", body: "x" }))).toEqual([403, "media_key_not_allowed"]);
    expect(await code(await call(await signed("GET", "jobs/x")))).toEqual([403, "media_key_not_allowed"]);
    expect((await call(await signed("GET", `uploads/${uid()}`))).status).toBe(404);
  });

  it("PUT streams a body of its Content-Length into R2 as a result (411 without it, 413 over the limit)", async () => {
    const name = `${uid()}.mp4`;
    const url = await signed("PUT", `results/${name}`);
    const data = new Uint8Array(3 * 1048576 + 7).map((_, i) => (i * 31) & 255);
    const stream = new Blob([data]).stream(); // a stream: the Worker must not need the whole body first
    const put = await call(url, { method: "PUT", body: stream, headers: { "Content-Length": String(data.length) } });
    expect(put.status).toBe(201);
    const obj = await E.FILES.head(`results/${name}`);
    expect(obj?.size).toBe(data.length);
    expect(obj?.httpMetadata?.contentType).toBe("video/mp4");
    expect(Number(obj?.customMetadata?.expiresAt)).toBeGreaterThan(Date.now()); // results expire (RESULT_TTL_S)
    const got = await call(`/api/results/${name}`);
    expect(got.headers.get("Content-Type")).toBe("video/mp4");
    expect(got.headers.get("Content-Disposition")).toBe(`inline; filename="faceswap-${name}"`);
    expect(hex(await crypto.subtle.digest("SHA-256", await got.arrayBuffer()))).toBe(hex(await crypto.subtle.digest("SHA-256", data)));
    const part = await call(`/api/results/${name}`, { headers: { Range: "bytes=10-19" } });
    expect([part.status, part.headers.get("Content-Range")]).toEqual([206, `bytes 10-19/${data.length}`]);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(data.slice(10, 20));
    const noLength = await call(url, { method: "PUT", body: new Blob([data]).stream() });
    expect(noLength.status).toBe(411);
    const tooBig = await call(url, { method: "PUT", body: "x", headers: { "Content-Length": String(500 * 1048576) } });
    expect(tooBig.status).toBe(413);
  });

  it("URLs use PUBLIC_URL when set, else the request's origin", async () => {
    const { mediaUrl } = await import("../src/media");
    expect(await mediaUrl(E, "http://127.0.0.1:8787", "GET", "uploads/x")).toMatch(
      /^http:\/\/127\.0\.0\.1:8787\/api\/media\/uploads\/x\?expires=\d+&signature=[0-9a-f]{64}$/);
    const url = await mediaUrl({ ...E, PUBLIC_URL: "https://faceswap.example/" }, "http://127.0.0.1:8787", "PUT", "results/y.mp4");
    expect(url.startsWith("https://faceswap.example/api/media/results/y.mp4?expires=")).toBe(true);
    const expires = Number(new URL(url).searchParams.get("expires"));
    expect(expires - Date.now() / 1000).toBeGreaterThan(7190); // MEDIA_URL_TTL_S
    expect(expires - Date.now() / 1000).toBeLessThanOrEqual(7200);
  });
});

describe("uploads (R2 multipart, streamed parts)", () => {
  const json = (body: unknown) => ({ method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
  it("create -> parts -> complete stores the whole file; then it can be read through a signed URL", async () => {
    const MiB = 1048576;
    const data = new Uint8Array(10 * MiB + 12345).map((_, i) => (i * 7 + (i >> 12)) & 255);
    data.set(MP4);
    const created = await call("/api/uploads", json({ size: data.length }));
    expect(created.status).toBe(201);
    const up = await created.json() as { id: string; uploadId: string; partBytes: number; parts: number };
    expect([up.partBytes, up.parts]).toEqual([10 * MiB, 2]);
    const q = `?uploadId=${encodeURIComponent(up.uploadId)}`;
    const parts = [];
    for (let n = 1; n <= up.parts; n++) {
      const chunk = data.slice((n - 1) * up.partBytes, n * up.partBytes);
      const res = await call(`/api/uploads/${up.id}/parts/${n}${q}`, { method: "PUT", body: new Blob([chunk]).stream(),
        headers: { "Content-Length": String(chunk.length) } });
      expect(res.status).toBe(200);
      parts.push(await res.json());
    }
    const done = await call(`/api/uploads/${up.id}/complete${q}`, json({ parts }));
    expect(done.status).toBe(200);
    expect(await done.json()).toEqual({ id: up.id, size: data.length });
    const got = await call(await signed("GET", `uploads/${up.id}`));
    // A type that is never compressed on the way: the gateway gets the bytes and their length.
    expect([got.headers.get("Content-Type"), got.headers.get("Content-Length")]).toEqual(["application/octet-stream", String(data.length)]);
    expect(hex(await crypto.subtle.digest("SHA-256", await got.arrayBuffer()))).toBe(hex(await crypto.subtle.digest("SHA-256", data)));
  });
  it("refuses what it cannot take: too big, no size, a part over 10 MiB or without length, a bad id", async () => {
    expect((await call("/api/uploads", json({ size: 300 * 1048576 }))).status).toBe(413);
    expect((await call("/api/uploads", json({}))).status).toBe(400);
    const up = await (await call("/api/uploads", json({ size: 100 }))).json() as { id: string; uploadId: string };
    const q = `?uploadId=${encodeURIComponent(up.uploadId)}`;
    const put = (path: string, headers: Record<string, string>) => call(path, { method: "PUT", body: "x", headers });
    expect((await put(`/api/uploads/${up.id}/parts/1${q}`, { "Content-Length": String(11 * 1048576) })).status).toBe(413);
    expect((await call(`/api/uploads/${up.id}/parts/1${q}`, { method: "PUT", body: new Blob(["x"]).stream() })).status).toBe(411);
    expect((await put(`/api/uploads/${up.id}/parts/99${q}`, { "Content-Length": "1" })).status).toBe(400);
    expect((await put(`/api/uploads/not-an-id/parts/1${q}`, { "Content-Length": "1" })).status).toBe(400);
    expect((await put(`/api/uploads/${up.id}/parts/1`, { "Content-Length": "1" })).status).toBe(400);
    expect((await call(`/api/uploads/${up.id}/complete${q}`, json({ parts: [] }))).status).toBe(400);
    expect((await call(`/api/uploads/${up.id}${q}`, { method: "DELETE" })).status).toBe(204);
  });
});

describe("jobs", () => {
  const id = "a".repeat(32);
  async function uploaded(bytes: Uint8Array = MP4): Promise<string> {
    const uid = crypto.randomUUID();
    await E.FILES.put(`uploads/${uid}`, bytes);
    return uid;
  }
  type Sent = { video_url?: string; archive_url?: string; result_url: string; source?: File; source_face_id?: string };
  /** A gateway that records the job's form and answers GET /v1/jobs/:id with ``state``. */
  function jobGateway(state: Record<string, unknown>) {
    const sent: Sent[] = [];
    const spy = mockGateway(async (url, init) => {
      if (url === "http://gateway.test/v1/jobs") {
        const h = new Headers(init.headers);
        const fd = await new Request("http://x/", { method: "POST", body: init.body as ArrayBuffer,
          headers: { "Content-Type": h.get("Content-Type")! } }).formData();
        expect(h.get("X-Faceswap-Signature")).toMatch(/^[0-9a-f]{64}$/);
        sent.push(Object.fromEntries(fd.entries()) as unknown as Sent);
        return Response.json({ id, status: "queued" }, { status: 202 });
      }
      if (url === `http://gateway.test/v1/jobs/${id}`) return Response.json({ id, kind: "video", ...state });
      return new Response("?", { status: 404 });
    });
    return { sent, spy };
  }

  it("hands the gateway signed URLs, not bytes; the result it PUTs is linked from R2 and the upload deleted", async () => {
    const state: Record<string, unknown> = { status: "running", progress: 0.5, done: 5, total: 10 };
    const { sent } = jobGateway(state);
    const upload = await uploaded();
    const created = await call("/api/jobs", { method: "POST", body: form({ source: PNG, upload }) });
    expect(created.status).toBe(202);
    expect((await created.json() as { poll: string }).poll).toBe(`/api/jobs/${id}`);
    const job = sent[0];
    expect(job.source).toBeInstanceOf(File);
    expect(job.video_url).toMatch(new RegExp(`^http://worker\\.test/api/media/uploads/${upload}\\?expires=\\d+&signature=[0-9a-f]{64}$`));
    expect(job.result_url).toMatch(/^http:\/\/worker\.test\/api\/media\/results\/[0-9a-f-]{36}\.mp4\?expires=\d+&signature=[0-9a-f]{64}$/);
    const expires = Number(new URL(job.video_url!).searchParams.get("expires"));
    expect(pathOf(job.video_url!)).toBe(await signed("GET", `uploads/${upload}`, expires));
    // The gateway's job worker reads the video and writes its result through those URLs.
    const input = await call(pathOf(job.video_url!));
    expect(new Uint8Array(await input.arrayBuffer())).toEqual(MP4);
    const running = await (await call(`/api/jobs/${id}`)).json() as { progress: number; result?: string };
    expect([running.progress, running.result]).toEqual([0.5, undefined]);
    const RESULT = new Uint8Array([...MP4, 9, 9, 9]);
    const put = await call(pathOf(job.result_url), { method: "PUT", body: RESULT, headers: { "Content-Length": String(RESULT.length) } });
    expect(put.status).toBe(201);
    Object.assign(state, { status: "done", progress: 1, result_ready: true, result_url_used: true });
    const done = await (await call(`/api/jobs/${id}`)).json() as { status: string; result: string };
    expect(done.status).toBe("done");
    expect(done.result).toBe(`/api/results/${new URL(job.result_url).pathname.split("/").pop()}`);
    const file = await call(done.result);
    expect(file.headers.get("Content-Type")).toBe("video/mp4");
    expect(file.headers.get("Content-Disposition")).toMatch(/^inline; filename="faceswap-[0-9a-f-]{36}\.mp4"$/);
    expect(new Uint8Array(await file.arrayBuffer())).toEqual(RESULT);
    expect(await uploadKeys()).toEqual([]); // the job ended: its input is gone from R2
  });

  it("a job that failed passes its error_code on and deletes the upload; done without a stored result is failed", async () => {
    const state: Record<string, unknown> = { status: "failed", error_code: "corrupt_video", error: "The video cannot be read." };
    jobGateway(state);
    await call("/api/jobs", { method: "POST", body: form({ source: PNG, upload: await uploaded() }) });
    const failed = await (await call(`/api/jobs/${id}`)).json() as { status: string; error_code: string };
    expect([failed.status, failed.error_code]).toEqual(["failed", "corrupt_video"]);
    expect(await uploadKeys()).toEqual([]);
    Object.assign(state, { status: "done", error_code: null, error: null, result_ready: true, result_url_used: false });
    const missing = await (await call(`/api/jobs/${id}`)).json() as { status: string; error_code: string };
    expect([missing.status, missing.error_code]).toEqual(["failed", "result_missing"]);
  });

  it("every video the gateway's jobs take is a video job: QuickTime, Matroska/WebM, AVI (src/formats.ts)", async () => {
    const { sent } = jobGateway({ status: "queued" });
    const heads = ["\0\0\0\x14ftypqt  \0\0\0\0", "\x1a\x45\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2\x81",
      "RIFF\0\0\0\0AVI LIST", "\0\0\0\x08wide\0\0\0\x10mdat"];
    for (const head of heads) {
      const upload = await uploaded(Uint8Array.from(head, (c) => c.charCodeAt(0)));
      expect((await call("/api/jobs", { method: "POST", body: form({ source: PNG, upload }) })).status).toBe(202);
    }
    expect(sent.map((s) => [Boolean(s.video_url), /\.mp4\?/.test(s.result_url)])).toEqual(heads.map(() => [true, true]));
  });

  it("a zip is a batch: archive_url and a .zip result; source_face_id instead of a photo", async () => {
    const { sent } = jobGateway({ status: "queued" });
    const zip = new Uint8Array([0x50, 0x4b, 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const res = await call("/api/jobs", { method: "POST", body: form({ source_face_id: "f".repeat(32), upload: await uploaded(zip) }) });
    expect(res.status).toBe(202);
    expect(sent[0].archive_url).toContain("/api/media/uploads/");
    expect(sent[0].video_url).toBeUndefined();
    expect(sent[0].result_url).toMatch(/\/api\/media\/results\/[0-9a-f-]{36}\.zip\?/);
    expect(sent[0].source_face_id).toBe("f".repeat(32));
  });

  it("a job the gateway refuses deletes the upload and passes the code on", async () => {
    mockGateway(() => Response.json({ code: "media_url_not_allowed", message: "video_url must start with ..." }, { status: 422 }));
    const res = await call("/api/jobs", { method: "POST", body: form({ source: PNG, upload: await uploaded() }) });
    expect([res.status, (await res.json() as { code: string }).code]).toEqual([422, "media_url_not_allowed"]);
    expect(await uploadKeys()).toEqual([]);
  });
  it("415 (and the upload deleted) for an upload that is not a video or a bad photo; 404 for one that is gone; 400 without one", async () => {
    const spy = mockGateway(() => new Response("never", { status: 500 }));
    const res = await call("/api/jobs", { method: "POST", body: form({ source: PNG, upload: await uploaded(PNG) }) });
    expect(res.status).toBe(415);
    expect(await uploadKeys()).toEqual([]);
    const badPhoto = await call("/api/jobs", { method: "POST", body: form({ source: MP4, upload: await uploaded() }) });
    expect(badPhoto.status).toBe(415);
    expect(await uploadKeys()).toEqual([]); // a refused job leaves no upload behind
    expect((await call("/api/jobs", { method: "POST", body: form({ source: PNG, upload: crypto.randomUUID() }) })).status).toBe(404);
    expect((await call("/api/jobs", { method: "POST", body: form({ source: PNG, video: MP4 }) })).status).toBe(400);
    expect(spy).not.toHaveBeenCalled();
  });
  it("404 for malformed ids, ids this Worker did not create, and never a path from user input", async () => {
    expect((await call("/api/jobs/..%2f..%2fetc")).status).toBe(404);
    expect((await call(`/api/jobs/${"c".repeat(32)}`)).status).toBe(404);
    expect((await call("/api/results/..%2Fuploads%2Fx")).status).toBe(404);
  });
});

describe("results expire", () => {
  it("an expired result is 404 and deleted; the cron purges the rest", async () => {
    const name = "12345678-1234-1234-1234-123456789abc.png";
    await E.FILES.put(`results/${name}`, PNG, { customMetadata: { expiresAt: String(Date.now() - 1000) } });
    expect((await call(`/api/results/${name}`)).status).toBe(404);
    expect(await E.FILES.head(`results/${name}`)).toBeNull();
    await E.FILES.put("results/old.png", PNG, { customMetadata: { expiresAt: String(Date.now() - 1000) } });
    await worker.scheduled(createScheduledController(), E);
    expect(await E.FILES.head("results/old.png")).toBeNull();
  });
});

describe("per-client daily quota", () => {
  const okSwap = () => new Response(PNG, { headers: { "Content-Type": "image/png", "X-Faces-Detected": "1",
    "X-Faces-Swapped": "1" } });
  const withQuota = (n: string) => ({ ...E, DAILY_QUOTA: n }) as AppEnv;
  const callWith = (env: AppEnv, path: string, init: RequestInit, client: string) => worker.fetch(
    new Request(`http://worker.test${path}`, { ...init, headers: { "CF-Connecting-IP": client } }), env);
  const quotaKeys = async () => (await E.FILES.list({ prefix: "quota/" })).objects.map((o) => o.key);

  it("the swap past DAILY_QUOTA is 429 quota_exceeded until midnight UTC; jobs share it; others still pass", async () => {
    const spy = mockGateway(okSwap);
    const env3 = withQuota("3");
    const swap = (client: string) => callWith(env3, "/api/swap", { method: "POST", body: form({ source: PNG, target: PNG }) },
      client);
    for (let i = 0; i < 3; i++) expect((await swap("198.51.100.7")).status).toBe(200);
    const refused = await swap("198.51.100.7");
    expect(refused.status).toBe(429);
    const { secondsToMidnight } = await import("../src/limits");
    expect(Math.abs(Number(refused.headers.get("Retry-After")) - secondsToMidnight())).toBeLessThanOrEqual(2);
    const body = await refused.json() as { code: string; message: string };
    expect(body.code).toBe("quota_exceeded");
    expect(body.message).toContain("midnight UTC");
    expect(spy).toHaveBeenCalledTimes(3); // the refused one never reached the gateway
    const job = await callWith(env3, "/api/jobs", { method: "POST", body: form({ source: PNG, video: MP4 }) }, "198.51.100.7");
    expect([job.status, (await job.json() as { code: string }).code]).toEqual([429, "quota_exceeded"]);
    expect((await swap("198.51.100.8")).status).toBe(200);
    // counted per day under a hash of the client key: no address is stored
    const keys = await quotaKeys();
    expect(keys.length).toBeGreaterThanOrEqual(2);
    expect(keys.every((k) => /^quota\/\d{4}-\d{2}-\d{2}\/[0-9a-f]{64}$/.test(k) && !k.includes("198.51"))).toBe(true);
    // the page has a sentence for it
    expect(await (await call("/")).text()).toContain("quota_exceeded:");
  });

  it("a new UTC day starts from zero; \"0\" turns the quota off; the cron deletes past days' counts", async () => {
    const { overDailyQuota } = await import("../src/limits");
    const env1 = withQuota("1");
    const req = new Request("http://worker.test/api/swap", { headers: { "CF-Connecting-IP": "198.51.100.20" } });
    const today = Date.now();
    expect(await overDailyQuota(req, env1, today)).toBeNull();
    expect(await overDailyQuota(req, env1, today)).toContain("1 swaps");
    expect(await overDailyQuota(req, env1, today + 86_400_000)).toBeNull();
    const off = withQuota("0");
    for (let i = 0; i < 3; i++) expect(await overDailyQuota(req, off, today)).toBeNull();
    // yesterday's count has expired: the cron (purge) removes it, today's stays
    await overDailyQuota(req, env1, today - 86_400_000);
    const before = await quotaKeys();
    await worker.scheduled(createScheduledController(), E);
    const after = await quotaKeys();
    const day = (t: number) => new Date(t).toISOString().slice(0, 10);
    expect(before.some((k) => k.includes(day(today - 86_400_000)))).toBe(true);
    expect(after.some((k) => k.includes(day(today - 86_400_000)))).toBe(false);
    expect(after.some((k) => k.includes(day(today)))).toBe(true);
  });
});

describe("per-client rate limits", () => {
  // The local binding (miniflare) counts in fixed windows aligned to the minute: start a burst
  // with at least 5 s left in the window, so that it is not split across two.
  async function awayFromWindowEdge() {
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 5_000) await new Promise((r) => setTimeout(r, left + 100));
  }
  const okSwap = () => new Response(PNG, { headers: { "Content-Type": "image/png", "X-Faces-Detected": "1",
    "X-Faces-Swapped": "1" } });

  it("the 11th swap in a minute from one client is 429 with Retry-After; another client still passes", async () => {
    const spy = mockGateway(okSwap);
    await awayFromWindowEdge();
    const swap = (client: string) => call("/api/swap", { method: "POST", body: form({ source: PNG, target: PNG }), client });
    for (let i = 0; i < 10; i++) expect((await swap("203.0.113.7")).status).toBe(200);
    const refused = await swap("203.0.113.7");
    expect(refused.status).toBe(429);
    expect(refused.headers.get("Retry-After")).toBe("60");
    const body = await refused.json() as { code: string; message: string };
    expect(body.code).toBe("rate_limited");
    expect(body.message).toContain("try again");
    expect(spy).toHaveBeenCalledTimes(10); // the refused one never reached the gateway
    // Swaps and video jobs share one budget.
    const job = await call("/api/jobs", { method: "POST", body: form({ source: PNG, video: MP4 }), client: "203.0.113.7" });
    expect(job.status).toBe(429);
    expect((await swap("203.0.113.8")).status).toBe(200);
    // Reads have their own, larger budget: the limited client can still poll and download.
    expect((await call("/api/results/no-such-result.png", { client: "203.0.113.7" })).status).toBe(404);
    expect(await uploadKeys()).toEqual([]);
  }, 20_000);

  it("polling and results allow 120 a minute per client", async () => {
    await awayFromWindowEdge();
    const read = (client: string) => call("/api/results/00000000-0000-0000-0000-000000000000.png", { client });
    for (let i = 0; i < 120; i++) expect((await read("203.0.113.9")).status).toBe(404);
    const refused = await read("203.0.113.9");
    expect([refused.status, refused.headers.get("Retry-After")]).toEqual([429, "60"]);
    expect((await call(`/api/jobs/${"b".repeat(32)}`, { client: "203.0.113.9" })).status).toBe(429);
    expect((await read("203.0.113.10")).status).toBe(404);
  }, 20_000);

  it("uploads (create, parts, complete, abort) have their own budget of 60 a minute", async () => {
    await awayFromWindowEdge();
    const create = (client: string) => call("/api/uploads", { method: "POST", body: "{}", client });
    for (let i = 0; i < 60; i++) expect((await create("203.0.113.11")).status).toBe(400); // counted before the body is read
    const refused = await call(`/api/uploads/${crypto.randomUUID()}/parts/1?uploadId=x`, { method: "PUT", body: "x",
      client: "203.0.113.11" });
    expect([refused.status, refused.headers.get("Retry-After")]).toEqual([429, "60"]);
    expect((await create("203.0.113.12")).status).toBe(400);
    // The signed media URLs are the gateway's: no client budget.
    expect((await call("/api/media/uploads/x", { client: "203.0.113.11" })).status).toBe(403);
  }, 20_000);

  it("without CF-Connecting-IP (local runs) all requests share one key; the page has a sentence for 429", async () => {
    const { clientKey } = await import("../src/limits");
    expect(clientKey(new Request("http://x/"))).toBe("local");
    expect(clientKey(new Request("http://x/", { headers: { "CF-Connecting-IP": "192.0.2.1" } }))).toBe("192.0.2.1");
    expect(await (await call("/")).text()).toContain("rate_limited:");
  });
});
