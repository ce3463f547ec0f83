// GET /api/stream, the live WebSocket relayed to the gateway's GET /v1/stream. The gateway is a
// mocked fetch that answers the upgrade with one end of a WebSocketPair (101 + webSocket), as a
// real outgoing WebSocket fetch does; the test plays the gateway on the other end and the
// browser on the socket the Worker answers with.
import { env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import worker from "../src/index";
import type { AppEnv } from "../src/env";
import { passOn } from "../src/stream";

const E = env as unknown as AppEnv;
let clients = 0;
const nextClient = () => { clients++; return `10.9.${Math.floor(clients / 250)}.${clients % 250 + 1}`; };

// Sockets a test left open are closed after it (else workerd reports their peers gone).
const open_: WebSocket[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const ws of open_.splice(0)) try { ws.close(1000); } catch { /* closed */ }
});

const hex = (b: ArrayBuffer) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
/** hex HMAC-SHA256 with the test secret, computed here (not with the Worker's code). */
async function hmac(msg: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode("unit-test-secret"),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(msg)));
}

type Msg = string | ArrayBuffer;
/** Every message and the close of ``ws`` (accepted here), to be awaited in order. */
function recorder(ws: WebSocket) {
  const queue: Msg[] = [];
  let wake: (() => void) | null = null;
  let closeEvent: { code: number; reason: string } | null = null;
  ws.addEventListener("message", (e) => { queue.push(e.data as Msg); wake?.(); });
  ws.addEventListener("close", (e) => { closeEvent = { code: e.code, reason: e.reason }; wake?.(); });
  ws.binaryType = "arraybuffer";
  ws.accept();
  open_.push(ws);
  const until = async <T>(get: () => T | null, what: string): Promise<T> => {
    const end = Date.now() + 5000;
    for (;;) {
      const v = get();
      if (v !== null) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => { wake = r; setTimeout(r, 50); });
    }
  };
  return {
    ws, queue,
    next: () => until(() => (queue.length ? queue.shift()! : null), "a message"),
    json: async () => JSON.parse((await until(() => (queue.length ? queue.shift()! : null), "a message")) as string),
    closed: () => until(() => closeEvent, "the close"),
  };
}

type Opened = { url: string; headers: Headers };
/** A gateway whose stream upgrade opens; ``sockets`` gets the gateway's end of each. */
function mockGatewayStream() {
  const opened: Opened[] = [];
  const sockets: ReturnType<typeof recorder>[] = [];
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    opened.push({ url: String(input), headers: new Headers(init?.headers) });
    const pair = new WebSocketPair();
    sockets.push(recorder(pair[0]));
    return new Response(null, { status: 101, webSocket: pair[1] });
  });
  return { opened, sockets, spy };
}

async function open(client = nextClient()) {
  const res = await worker.fetch(new Request("http://worker.test/api/stream",
    { headers: { Upgrade: "websocket", "CF-Connecting-IP": client } }), E);
  expect(res.status).toBe(101);
  return recorder(res.webSocket!);
}

describe("GET /api/stream", () => {
  it("426 without an upgrade (and the gateway is not called)", async () => {
    const { spy } = mockGatewayStream();
    const res = await worker.fetch(new Request("http://worker.test/api/stream", { headers: { "CF-Connecting-IP": nextClient() } }), E);
    expect([res.status, res.headers.get("Upgrade")]).toEqual([426, "websocket"]);
    expect((await res.json() as { code: string }).code).toBe("upgrade_required");
    expect(spy).not.toHaveBeenCalled();
    const post = await worker.fetch(new Request("http://worker.test/api/stream", { method: "POST" }), E);
    expect([post.status, post.headers.get("Allow")]).toEqual([405, "GET"]);
  });

  it("opens the gateway's stream signed: GET /v1/stream?nonce=<random> with the empty body's hash", async () => {
    const { opened } = mockGatewayStream();
    await open();
    await open();
    expect(opened.length).toBe(2);
    const emptySha = hex(await crypto.subtle.digest("SHA-256", new Uint8Array()));
    for (const { url, headers } of opened) {
      expect(url).toMatch(/^http:\/\/gateway\.test\/v1\/stream\?nonce=[0-9a-f]{32}$/);
      expect(headers.get("Upgrade")).toBe("websocket");
      const ts = headers.get("X-Faceswap-Timestamp")!;
      expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(5);
      expect(headers.get("X-Faceswap-Content-SHA256")).toBe(emptySha);
      const path = url.slice("http://gateway.test".length);
      // Recomputed here: the signed path includes the nonce.
      expect(headers.get("X-Faceswap-Signature")).toBe(await hmac(`GET\n${path}\n${ts}\n${emptySha}`));
    }
    expect(opened[0].url).not.toBe(opened[1].url); // two streams in one second are not replays
  });

  it("relays the protocol both ways: first message, ready (with the Worker's frame bound), frames, stop, end, close 1000", async () => {
    const { sockets } = mockGatewayStream();
    const browser = await open();
    const gateway = sockets[0];
    const first = JSON.stringify({ source: "aGVsbG8=", max_fps: 15 });
    browser.ws.send(first);
    expect(await gateway.next()).toBe(first);
    gateway.ws.send(JSON.stringify({ type: "ready", max_fps: 15, max_frame_bytes: 4194304, stand_in_models: [] }));
    expect(await browser.json()).toEqual({ type: "ready", max_fps: 15, max_frame_bytes: 1048576, stand_in_models: [] });
    const frame = new Uint8Array(200_000).map((_, i) => (i * 13) & 255);
    frame.set([0xff, 0xd8, 0xff]);
    browser.ws.send(frame);
    expect(new Uint8Array(await gateway.next() as ArrayBuffer)).toEqual(frame);
    const meta = { type: "frame", seq: 0, faces: [], latency_ms: 12.5, dropped: 0, format: "jpeg", detected: true };
    gateway.ws.send(JSON.stringify(meta));
    gateway.ws.send(frame.slice(0, 1000));
    expect(await browser.json()).toEqual(meta); // later messages pass untouched
    expect(new Uint8Array(await browser.next() as ArrayBuffer)).toEqual(frame.slice(0, 1000));
    browser.ws.send(JSON.stringify({ type: "stop" }));
    expect(JSON.parse(await gateway.next() as string)).toEqual({ type: "stop" });
    gateway.ws.send(JSON.stringify({ type: "end", received: 1, dropped: 0, processed: 1 }));
    gateway.ws.close(1000);
    expect((await browser.json()).type).toBe("end");
    expect((await browser.closed()).code).toBe(1000);
  });

  it("passes the gateway's error and close code on (4422 no_face_in_source, 4503 overloaded)", async () => {
    const { sockets } = mockGatewayStream();
    for (const [code, reason] of [[4422, "no_face_in_source"], [4503, "overloaded"]] as const) {
      const browser = await open();
      const gateway = sockets[sockets.length - 1];
      browser.ws.send("{}");
      await gateway.next();
      gateway.ws.send(JSON.stringify({ type: "error", code: reason, message: "..." }));
      gateway.ws.close(code, reason);
      expect((await browser.json()).code).toBe(reason);
      expect(await browser.closed()).toEqual({ code, reason });
    }
  });

  it("a browser that leaves closes the gateway's stream too", async () => {
    const { sockets } = mockGatewayStream();
    const browser = await open();
    browser.ws.close(1001, "tab closed");
    expect(await sockets[0].closed()).toEqual({ code: 1001, reason: "tab closed" });
  });

  it("close codes a socket cannot send are mapped: 1006 from the gateway is 4502, from the browser 1001", () => {
    expect(passOn("gateway", 1006, "")).toEqual([4502, "gateway_closed"]);
    expect(passOn("gateway", 1015, "")).toEqual([4502, "gateway_closed"]);
    expect(passOn("browser", 1006, "")).toEqual([1001, "browser_gone"]);
    expect(passOn("gateway", 1005, "")).toEqual([1000, ""]);
    expect(passOn("gateway", 4413, "frame_too_large")).toEqual([4413, "frame_too_large"]);
    expect(passOn("browser", 1009, "")).toEqual([1009, ""]);
  });

  it("a frame over the bound is not relayed: the browser gets frame_too_large and 4413, the gateway is closed", async () => {
    const { sockets } = mockGatewayStream();
    const browser = await open();
    const gateway = sockets[0];
    browser.ws.send("{}");
    await gateway.next();
    gateway.ws.send(JSON.stringify({ type: "ready", max_frame_bytes: 5000 })); // the gateway's own bound, smaller
    expect((await browser.json()).max_frame_bytes).toBe(5000);
    browser.ws.send(new Uint8Array(5000));
    expect(((await gateway.next()) as ArrayBuffer).byteLength).toBe(5000);
    browser.ws.send(new Uint8Array(5001));
    const err = await browser.json();
    expect([err.type, err.code]).toEqual(["error", "frame_too_large"]);
    expect(err.message).toContain("5001 bytes; the limit is 5000");
    expect((await browser.closed()).code).toBe(4413);
    expect((await gateway.closed()).code).toBe(4413);
    expect(gateway.queue.length).toBe(0); // the big frame never reached the gateway
  });

  it("a first message over MAX_STREAM_MESSAGE_BYTES is refused too", async () => {
    const { sockets } = mockGatewayStream();
    const browser = await open();
    browser.ws.send(JSON.stringify({ source: "A".repeat(1048576) }));
    expect((await browser.json()).code).toBe("frame_too_large");
    expect((await browser.closed()).code).toBe(4413);
    expect(sockets[0].queue.length).toBe(0);
  });

  it("an unreachable gateway is said on the socket: gateway_unreachable, 4502; a refused upgrade: gateway_error", async () => {
    vi.spyOn(globalThis, "fetch").mockRejectedValue(new TypeError("connection refused"));
    let browser = await open();
    const err = await browser.json();
    expect([err.type, err.code]).toEqual(["error", "gateway_unreachable"]);
    expect(await browser.closed()).toEqual({ code: 4502, reason: "gateway_unreachable" });
    vi.restoreAllMocks();
    vi.spyOn(globalThis, "fetch").mockResolvedValue(new Response("no", { status: 404 }));
    browser = await open();
    expect((await browser.json()).code).toBe("gateway_error");
    expect((await browser.closed()).code).toBe(4502);
  });

  it("a gateway that does not answer the upgrade in STREAM_OPEN_TIMEOUT_S: gateway_timeout, 4504", async () => {
    const spy = vi.spyOn(globalThis, "fetch").mockImplementation((_input, init) => new Promise((_ok, no) => {
      init?.signal?.addEventListener("abort", () => no(init.signal!.reason));
    }));
    const res = await worker.fetch(new Request("http://worker.test/api/stream",
      { headers: { Upgrade: "websocket", "CF-Connecting-IP": nextClient() } }), { ...E, STREAM_OPEN_TIMEOUT_S: "0.2" });
    const browser = recorder(res.webSocket!);
    const err = await browser.json();
    expect([err.code, err.message]).toEqual(["gateway_timeout", "The face-swap service did not open the stream within 0.2 s."]);
    expect(await browser.closed()).toEqual({ code: 4504, reason: "gateway_timeout" });
    expect(spy).toHaveBeenCalledOnce();
  });

  it("the 11th stream opened in a minute from one client is refused (rate_limited, 4429); another client still opens", async () => {
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 5_000) await new Promise((r) => setTimeout(r, left + 100)); // one fixed window for the burst
    const { spy } = mockGatewayStream();
    // Plain GETs (426) do not count.
    for (let i = 0; i < 3; i++) {
      await worker.fetch(new Request("http://worker.test/api/stream", { headers: { "CF-Connecting-IP": "198.51.100.7" } }), E);
    }
    for (let i = 0; i < 10; i++) {
      const b = await open("198.51.100.7");
      b.ws.close(1000);
    }
    expect(spy).toHaveBeenCalledTimes(10);
    const refused = await open("198.51.100.7");
    const err = await refused.json();
    expect([err.type, err.code]).toEqual(["error", "rate_limited"]);
    expect(err.message).toContain("try again in 60 seconds");
    expect(await refused.closed()).toEqual({ code: 4429, reason: "rate_limited" });
    expect(spy).toHaveBeenCalledTimes(10); // the refused one never reached the gateway
    await open("198.51.100.8");
    expect(spy).toHaveBeenCalledTimes(11);
  }, 20_000);
});
