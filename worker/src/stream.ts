import type { AppEnv } from "./env";
import { errorResponse } from "./env";
import { apiPath, GATEWAY_API, sign } from "./gateway";
import { overDailyQuota, overLimit } from "./limits";

/**
 * GET /api/stream: the live face swap, a WebSocket relayed to the gateway's GET /v1/stream.
 *
 * The Worker opens the gateway's stream with a signed upgrade request (`GET /v1/stream?nonce=<32
 * hex>`, empty body: the random nonce is in the signed path, so two streams opened in the same
 * second are not replays), then relays every message both ways as it comes, untouched but for
 * two things: a message over the limit (MAX_STREAM_MESSAGE_BYTES, and for frames the gateway's
 * `max_frame_bytes`) ends the stream with `frame_too_large` (4413) instead of being passed on;
 * and the gateway's `ready` message gets the smaller of the two limits as its `max_frame_bytes`,
 * so the page knows the bound that holds. The Worker keeps no frame beyond the one message it is
 * passing on. The protocol itself (first message, ready, frame, frame_error, stop, end) is the
 * gateway's: see docs/gateway.md, docs/live.md and gateway/core/stream.py.
 *
 * Closing: when either side closes, the other is closed with the same code and reason; codes a
 * socket cannot send are mapped: none (1005) -> 1000; the gateway gone without a close (1006,
 * 1015) -> 4502 `gateway_closed`; the browser gone (1006) -> 1001 to the gateway, which then
 * cancels the frame in work. Failures before the relay starts are told on the socket, since a
 * browser cannot read a refused upgrade's status: the socket is accepted, gets one
 * `{"type": "error", "code", "message"}` and is closed with 4000 + the HTTP status it stands
 * for: 4429 `rate_limited` (STREAM_LIMITER, counted per opening), 4502 `gateway_unreachable`
 * (cannot connect) or `gateway_error` (the gateway refused the upgrade), 4504 `gateway_timeout`
 * (no answer within STREAM_OPEN_TIMEOUT_S). A plain GET without `Upgrade: websocket` is 426.
 */
type Failure = { close: number; code: string; message: string };

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

/** Close codes a WebSocket may send (RFC 6455 7.4: 1004-1006 and 1015 are reserved, 1016-2999
 * are the protocol's). */
const sendable = (code: number) => code === 1000 || (code >= 1001 && code <= 1014 && ![1004, 1005, 1006].includes(code))
  || (code >= 3000 && code <= 4999);

/** The code and reason to close the other side with when ``from`` closed with ``code``. */
export function passOn(from: "gateway" | "browser", code: number, reason: string): [number, string] {
  if (code === 1005) return [1000, reason];
  if (sendable(code)) return [code, reason];
  return from === "gateway" ? [4502, reason || "gateway_closed"] : [1001, reason || "browser_gone"];
}

/** Reasons are at most 123 bytes in a close frame. */
function reasonOf(reason: string): string {
  const bytes = new TextEncoder().encode(reason);
  return bytes.length <= 123 ? reason : new TextDecoder().decode(bytes.slice(0, 120)).replace(/\uFFFD$/, "");
}

function safeClose(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reasonOf(reason));
  } catch { /* already closed or closing */ }
}

/** Tell ``ws`` why its stream ends (one error message, as the gateway does), then close it. */
function fail(ws: WebSocket, f: Failure): void {
  try {
    ws.send(JSON.stringify({ type: "error", code: f.code, message: f.message }));
  } catch { /* gone */ }
  safeClose(ws, f.close, f.code);
}

function upgraded(client: WebSocket): Response {
  return new Response(null, { status: 101, webSocket: client });
}

const size = (data: string | ArrayBuffer) =>
  typeof data === "string" ? (data.length * 3 <= 65536 ? data.length * 3 : new TextEncoder().encode(data).length) : data.byteLength;

/** Open the gateway's stream, signed; its socket, or why not. */
async function openGateway(env: AppEnv): Promise<WebSocket | Failure> {
  const timeoutS = Number(env.STREAM_OPEN_TIMEOUT_S) || 15;
  const path = `${apiPath("stream")}?nonce=${hex(crypto.getRandomValues(new Uint8Array(16)))}`;
  const headers = new Headers({ Upgrade: "websocket" });
  await sign(env, headers, GATEWAY_API.stream.method, path);
  let res: Response;
  try {
    res = await fetch(env.GATEWAY_URL.replace(/\/$/, "") + path,
      { headers, signal: AbortSignal.timeout(timeoutS * 1000) });
  } catch (err) {
    if ((err as Error)?.name === "TimeoutError") {
      return { close: 4504, code: "gateway_timeout",
        message: `The face-swap service did not open the stream within ${timeoutS} s.` };
    }
    return { close: 4502, code: "gateway_unreachable", message: `The face-swap service cannot be reached (${String(err)}).` };
  }
  if (res.status !== 101 || !res.webSocket) {
    return { close: 4502, code: "gateway_error", message: `The face-swap service refused the stream (${res.status}).` };
  }
  return res.webSocket;
}

/** Relay ``browser`` <-> ``gateway`` (both accepted here) until either closes; see above. */
function relay(browser: WebSocket, gateway: WebSocket, maxMessage: number): void {
  // Binary messages as ArrayBuffers (the runtime's default is Blob): their size is known and
  // they are passed on as they are.
  browser.binaryType = "arraybuffer";
  gateway.binaryType = "arraybuffer";
  let frameLimit = maxMessage;
  let ready = false;
  let closed = false;
  const closeBoth = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    safeClose(browser, code, reason);
    safeClose(gateway, code, reason);
  };
  browser.addEventListener("message", (e) => {
    if (closed) return;
    const data = e.data as string | ArrayBuffer;
    const limit = typeof data === "string" ? maxMessage : frameLimit;
    if (size(data) > limit) {
      const what = typeof data === "string" ? "A text message (the source photo?)" : "A frame";
      fail(browser, { close: 4413, code: "frame_too_large",
        message: `${what} is ${size(data)} bytes; the limit is ${limit} bytes.` });
      closed = true;
      safeClose(gateway, 4413, "frame_too_large");
      return;
    }
    try {
      gateway.send(data);
    } catch {
      closeBoth(4502, "gateway_closed");
    }
  });
  gateway.addEventListener("message", (e) => {
    if (closed) return;
    let data = e.data as string | ArrayBuffer;
    if (!ready && typeof data === "string" && data.length < 65536) {
      try {
        const msg = JSON.parse(data) as { type?: string; max_frame_bytes?: number };
        if (msg.type === "ready") {
          ready = true;
          if (typeof msg.max_frame_bytes === "number" && msg.max_frame_bytes > 0) {
            frameLimit = Math.min(maxMessage, msg.max_frame_bytes);
          }
          data = JSON.stringify({ ...msg, max_frame_bytes: frameLimit });
        }
      } catch { /* not JSON: passed on as it is */ }
    }
    try {
      browser.send(data);
    } catch {
      closeBoth(1001, "browser_gone");
    }
  });
  gateway.addEventListener("close", (e) => closeBoth(...passOn("gateway", e.code, e.reason)));
  browser.addEventListener("close", (e) => closeBoth(...passOn("browser", e.code, e.reason)));
  gateway.addEventListener("error", () => closeBoth(4502, "gateway_closed"));
  browser.addEventListener("error", () => closeBoth(1001, "browser_gone"));
}

/** GET /api/stream (see above). */
export async function handleStream(request: Request, env: AppEnv): Promise<Response> {
  if ((request.headers.get("Upgrade") ?? "").toLowerCase() !== "websocket") {
    return errorResponse(426, "upgrade_required", "Open /api/stream as a WebSocket (the page's Live section does).",
      { Upgrade: "websocket" });
  }
  const pair = new WebSocketPair();
  const [client, browser] = [pair[0], pair[1]];
  browser.accept();
  const limited = await overLimit(request, env, "stream");
  if (limited !== null) {
    fail(browser, { close: 4429, code: "rate_limited", message: limited });
    return upgraded(client);
  }
  const overQuota = await overDailyQuota(request, env);
  if (overQuota !== null) {
    fail(browser, { close: 4429, code: "quota_exceeded", message: overQuota });
    return upgraded(client);
  }
  const gateway = await openGateway(env);
  if (typeof gateway.close === "number") {
    fail(browser, gateway as Failure);
    return upgraded(client);
  }
  const upstream = gateway as WebSocket;
  upstream.accept();
  relay(browser, upstream, Number(env.MAX_STREAM_MESSAGE_BYTES) || 1048576);
  return upgraded(client);
}
