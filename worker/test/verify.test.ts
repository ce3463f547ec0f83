// POST /api/verify in the Workers runtime, the gateway mocked by spying on fetch: the file goes
// into R2 and on to the gateway as a streamed, signed form (the HMAC and the body's SHA-256
// recomputed here from what the gateway got), its JSON or its refusal comes back, the R2 copy is
// deleted whatever happens, and the per-client limit holds.
import { createScheduledController, env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import worker from "../src/index";
import type { AppEnv } from "../src/env";
import { safeName } from "../src/verify";

const E = env as unknown as AppEnv;
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4]);
const REPORT = { format: "jpeg", marks_found: ["c2pa", "xmp", "watermark"], ai_generated: true,
  c2pa: { present: true, valid: true }, xmp: { ai_generated: true },
  watermark: { found: true, payload: { service_id: 1, result_id: 42 }, confidence: 0.98 },
  result: { ours: true, known: true, created_at: 1767225600, kind: "image" }, summary: "..." };

let clients = 0;
const nextClient = () => `10.9.${Math.floor(++clients / 250)}.${clients % 250 + 1}`;
/** POST /api/verify with ``body`` streamed (as a browser sends a File), its length declared. */
function check(body: Uint8Array, name: string | null = "photo.jpg", opts: { client?: string; headers?: Record<string, string> } = {}) {
  const headers = new Headers({ "CF-Connecting-IP": opts.client ?? nextClient(), "Content-Length": String(body.length),
    ...opts.headers });
  if (name !== null) headers.set("X-File-Name", encodeURIComponent(name));
  return worker.fetch(new Request("http://worker.test/api/verify", { method: "POST", headers,
    body: new Blob([body]).stream() }), E);
}
const held = async () => (await E.FILES.list({ prefix: "verify/" })).objects;
const hex = (b: ArrayBuffer) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
async function hmac(msg: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode("unit-test-secret"),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(msg)));
}
function mockGateway(handler: (url: string, init: RequestInit) => Response | Promise<Response>) {
  return vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => handler(String(input), init ?? {}));
}
const codeOf = async (res: Response) => [res.status, (await res.json() as { code: string }).code];

afterEach(async () => {
  vi.restoreAllMocks();
  const left = (await held()).map((o) => o.key);
  if (left.length) await E.FILES.delete(left);
});

describe("POST /api/verify", () => {
  it("streams the file through R2 to the gateway as a signed form; passes the JSON on; deletes the R2 copy", async () => {
    // 9 MiB: read back from R2 in two ranges (8 MiB each at most).
    const data = new Uint8Array(9 * 1048576 + 333).map((_, i) => (i * 13 + (i >> 10)) & 255);
    data.set([0xff, 0xd8, 0xff, 0xe0]);
    let during: { key: string; size: number }[] = [];
    let got: { headers: Headers; body: Uint8Array } | null = null;
    const spy = mockGateway(async (url, init) => {
      expect(url).toBe("http://gateway.test/v1/verify");
      expect(init.method).toBe("POST");
      expect(init.body).toBeInstanceOf(ReadableStream); // streamed, not a buffer
      during = (await held()).map((o) => ({ key: o.key, size: o.size }));
      got = { headers: new Headers(init.headers), body: new Uint8Array(await new Response(init.body).arrayBuffer()) };
      return Response.json(REPORT);
    });
    const res = await check(data, "my holiday/../photo 1.JPG");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(REPORT);
    expect(spy).toHaveBeenCalledOnce();
    // While the gateway read it, the file was in R2 (one object, the file's size); now it is gone.
    expect(during).toHaveLength(1);
    expect(during[0].key).toMatch(/^verify\/[0-9a-f-]{36}$/);
    expect(during[0].size).toBe(data.length);
    expect(await held()).toEqual([]);
    // The signature, recomputed here: HMAC over POST, the path, the timestamp and the SHA-256 of
    // the very bytes the gateway received.
    const { headers, body } = got!;
    const ts = headers.get("X-Faceswap-Timestamp")!;
    expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(60);
    const bodyHash = hex(await crypto.subtle.digest("SHA-256", body));
    expect(headers.get("X-Faceswap-Content-SHA256")).toBe(bodyHash);
    expect(headers.get("X-Faceswap-Signature")).toBe(await hmac(`POST\n/v1/verify\n${ts}\n${bodyHash}`));
    // The form holds the file, whole, under the field name the gateway reads, with a safe name.
    const form = await new Request("http://x/", { method: "POST", body,
      headers: { "Content-Type": headers.get("Content-Type")! } }).formData();
    const file = form.get("file") as File;
    expect(file.name).toBe("photo_1.JPG");
    expect(hex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer())))
      .toBe(hex(await crypto.subtle.digest("SHA-256", data)));
  });

  it("passes the gateway's 4xx (415) on with its code, and deletes the R2 copy", async () => {
    mockGateway(() => Response.json({ code: "unsupported_media_type",
      message: "unsupported file: expected a JPEG, PNG, WebP or MP4 (judged from the bytes)." }, { status: 415 }));
    const res = await check(PNG, "x.png");
    expect(res.status).toBe(415);
    expect(await res.json()).toEqual({ code: "unsupported_media_type",
      message: "unsupported file: expected a JPEG, PNG, WebP or MP4 (judged from the bytes)." });
    expect(await held()).toEqual([]);
  });

  it("refuses locally what the gateway could not read: neither bytes nor name say a supported format", async () => {
    const spy = mockGateway(() => Response.json(REPORT));
    const text = new TextEncoder().encode("hello, not an image at all");
    expect(await codeOf(await check(text, "notes.txt"))).toEqual([415, "unsupported_media_type"]);
    expect(await codeOf(await check(text, null))).toEqual([415, "unsupported_media_type"]);
    expect(spy).not.toHaveBeenCalled();
    expect(await held()).toEqual([]);
    // The gateway judges by the name when the bytes say nothing: such a file goes on.
    expect((await check(text, "clip.mov")).status).toBe(200);
    expect(spy).toHaveBeenCalledOnce();
  });

  it("411 without a length, 413 over MAX_VERIFY_BYTES before reading, 400 for an empty file or a form", async () => {
    const spy = mockGateway(() => Response.json(REPORT));
    const raw = (headers: Record<string, string>, body: BodyInit) => worker.fetch(new Request("http://worker.test/api/verify",
      { method: "POST", headers: { "CF-Connecting-IP": nextClient(), ...headers }, body }), E);
    expect(await codeOf(await raw({}, new Blob([PNG]).stream()))).toEqual([411, "length_required"]);
    const big = await raw({ "Content-Length": String(Number(E.MAX_VERIFY_BYTES) + 1) }, new Blob([PNG]).stream());
    expect(big.status).toBe(413);
    expect((await big.json() as { message: string }).message).toMatch(/the limit is 95 MB/);
    expect(await codeOf(await check(new Uint8Array(0)))).toEqual([400, "empty_file"]);
    const fd = new FormData();
    fd.append("file", new File([PNG], "x.png"));
    expect(await codeOf(await raw({}, fd))).toEqual([400, "send_raw_file"]);
    expect(spy).not.toHaveBeenCalled();
    expect(await held()).toEqual([]);
  });

  // (workerd logs "fixed-length pipe ended prematurely" / "Network connection lost" for this one:
  // that is its local R2 refusing the short stream, which is the point.)
  it("a body shorter than its Content-Length is 400 incomplete_body, nothing kept", async () => {
    const spy = mockGateway(() => Response.json(REPORT));
    const res = await worker.fetch(new Request("http://worker.test/api/verify", { method: "POST",
      headers: { "CF-Connecting-IP": nextClient(), "Content-Length": "100" }, body: new Blob([PNG]).stream() }), E);
    expect(await codeOf(res)).toEqual([400, "incomplete_body"]);
    expect(spy).not.toHaveBeenCalled();
    expect(await held()).toEqual([]);
  });

  it("gateway down: 502 gateway_unreachable; busy: 503 overloaded with Retry-After; R2 copy deleted", async () => {
    mockGateway(() => Promise.reject(new TypeError("connection refused")));
    expect(await codeOf(await check(PNG, "a.png"))).toEqual([502, "gateway_unreachable"]);
    expect(await held()).toEqual([]);
    mockGateway(() => Response.json({ code: "overloaded" }, { status: 503, headers: { "Retry-After": "2" } }));
    const busy = await check(PNG, "a.png");
    expect([busy.status, busy.headers.get("Retry-After")]).toEqual([503, "2"]);
    expect((await busy.json() as { code: string }).code).toBe("overloaded");
    mockGateway(() => new Response("boom", { status: 500 }));
    expect(await codeOf(await check(PNG, "a.png"))).toEqual([502, "gateway_error"]);
    expect(await held()).toEqual([]);
  });

  it("the 21st check in a minute from one client is 429 with Retry-After; another client still passes", async () => {
    const left = 60_000 - (Date.now() % 60_000); // the local binding counts in fixed minute windows
    if (left < 5_000) await new Promise((r) => setTimeout(r, left + 100));
    const spy = mockGateway(() => Response.json(REPORT));
    for (let i = 0; i < 20; i++) expect((await check(PNG, "a.png", { client: "198.51.100.20" })).status).toBe(200);
    const refused = await check(PNG, "a.png", { client: "198.51.100.20" });
    expect([refused.status, refused.headers.get("Retry-After")]).toEqual([429, "60"]);
    expect((await refused.json() as { message: string }).message).toContain("Too many files checked");
    expect(spy).toHaveBeenCalledTimes(20); // the refused one reached neither R2 nor the gateway
    expect((await check(PNG, "a.png", { client: "198.51.100.21" })).status).toBe(200);
    // Its own budget: swaps from that client are not affected.
    const swap = await worker.fetch(new Request("http://worker.test/api/swap", { method: "POST",
      headers: { "CF-Connecting-IP": "198.51.100.20" }, body: new FormData() }), E);
    expect(swap.status).toBe(400);
  }, 20_000);

  it("names are cut to safe characters; a copy left behind by a cut-off check is purged when it expires", async () => {
    expect(safeName(null)).toBe("file");
    expect(safeName("..%2F..%2Fetc%2Fpasswd")).toBe("passwd");
    expect(safeName('a"b\r\nc.jpg')).toBe("a_b_c.jpg");
    expect(safeName("%E0%A4%A")).toBe("file");
    expect(safeName(encodeURIComponent("Foto – Köln.webp"))).toBe("Foto_K_ln.webp");
    await E.FILES.put("verify/00000000-0000-0000-0000-000000000000", PNG,
      { customMetadata: { expiresAt: String(Date.now() - 1000) } });
    await worker.scheduled(createScheduledController(), E);
    expect(await held()).toEqual([]);
  });

  it("the page has the Check a file part and a sentence for each failure", async () => {
    const page = await (await worker.fetch(new Request("http://worker.test/"), E)).text();
    expect(page).toContain('id="check-file"');
    for (const code of ["unsupported_media_type", "payload_too_large", "rate_limited", "gateway_unreachable", "empty_file"]) {
      expect(page).toContain(`${code}:`);
    }
  });
});
