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

afterEach(() => vi.restoreAllMocks());

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
  it("stores uploads and the result in R2 and signs the gateway call", async () => {
    let duringCall: string[] = [];
    const spy = mockGateway(async (url, init) => {
      expect(url).toBe("http://gateway.test/v1/swap");
      duringCall = await uploadKeys();
      const headers = new Headers(init.headers);
      const ts = headers.get("X-Faceswap-Timestamp")!;
      const body = new Uint8Array(init.body as ArrayBuffer);
      const key = await crypto.subtle.importKey("raw", new TextEncoder().encode("unit-test-secret"),
        { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      const bodyHash = hex(await crypto.subtle.digest("SHA-256", body));
      expect(headers.get("X-Faceswap-Content-SHA256")).toBe(bodyHash);
      const msg = `POST\n/v1/swap\n${ts}\n${bodyHash}`;
      expect(headers.get("X-Faceswap-Signature")).toBe(hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(msg))));
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
    // The uploads were in R2 while the gateway worked, and are gone once it answered.
    expect(duringCall.map((k) => k.split("/")[2]).sort()).toEqual(["source", "target"]);
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

describe("jobs", () => {
  it("creates a job, polls it, and copies the finished video into R2", async () => {
    const id = "a".repeat(32);
    let status = "running";
    let duringCall: string[] = [];
    mockGateway(async (url) => {
      if (url.endsWith("/v1/jobs")) {
        duringCall = await uploadKeys();
        return Response.json({ id, status: "queued" }, { status: 202 });
      }
      if (url.endsWith(`/v1/jobs/${id}`)) return Response.json({ id, kind: "video", status, progress: 0.5, done: 5, total: 10 });
      if (url.endsWith(`/v1/jobs/${id}/result`)) return new Response(MP4, { headers: { "Content-Type": "video/mp4" } });
      return new Response("?", { status: 404 });
    });
    const created = await call("/api/jobs", { method: "POST", body: form({ source: PNG, video: MP4 }) });
    expect(created.status).toBe(202);
    expect((await created.json() as { poll: string }).poll).toBe(`/api/jobs/${id}`);
    // The gateway keeps its own copy of the video once it answered 202: the R2 uploads are gone.
    expect(duringCall.map((k) => k.split("/")[2]).sort()).toEqual(["source", "video"]);
    expect(await uploadKeys()).toEqual([]);
    const running = await (await call(`/api/jobs/${id}`)).json() as { progress: number; result?: string };
    expect(running.progress).toBe(0.5);
    expect(running.result).toBeUndefined();
    status = "done";
    const done = await (await call(`/api/jobs/${id}`)).json() as { result: string };
    expect(done.result).toBe(`/api/results/${id}.mp4`);
    const file = await call(done.result);
    expect(file.headers.get("Content-Type")).toBe("video/mp4");
    expect(new Uint8Array(await file.arrayBuffer())).toEqual(MP4);
  });
  it("a job the gateway refuses leaves no uploads behind", async () => {
    mockGateway(() => Response.json({ code: "corrupt_video", message: "The video cannot be read." }, { status: 422 }));
    const res = await call("/api/jobs", { method: "POST", body: form({ source: PNG, video: MP4 }) });
    expect(res.status).toBe(422);
    expect(await uploadKeys()).toEqual([]);
  });
  it("415 for a video that is not one", async () => {
    const res = await call("/api/jobs", { method: "POST", body: form({ source: PNG, video: PNG }) });
    expect(res.status).toBe(415);
  });
  it("404 for malformed ids, never a path from user input", async () => {
    expect((await call("/api/jobs/..%2f..%2fetc")).status).toBe(404);
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

  it("without CF-Connecting-IP (local runs) all requests share one key; the page has a sentence for 429", async () => {
    const { clientKey } = await import("../src/limits");
    expect(clientKey(new Request("http://x/"))).toBe("local");
    expect(clientKey(new Request("http://x/", { headers: { "CF-Connecting-IP": "192.0.2.1" } }))).toBe("192.0.2.1");
    expect(await (await call("/")).text()).toContain("rate_limited:");
  });
});
