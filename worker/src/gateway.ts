import API from "./api.json";
import type { AppEnv } from "./env";

/**
 * Every gateway call the Worker makes (src/api.json): method, path, the form fields it sends
 * and the JSON fields it reads, each with its OpenAPI type. tests/unit/test_api_contract.py
 * checks this table against the gateway's /openapi.json; the calls below are built from it.
 */
export const GATEWAY_API = API;
export type GatewayCall = keyof typeof API;

/** The path of ``call``, its one path parameter (``{face_id}``, ``{job_id}``) set to ``id``. */
export function apiPath(call: GatewayCall, id = ""): string {
  return API[call].path.replace(/\{[a-z_]+\}/, encodeURIComponent(id));
}

/** The form of ``call`` from ``fields`` (in order; an empty or missing value is left out, as
 * the gateway reads it); a field the table does not declare is a bug, thrown. */
export function apiForm(call: GatewayCall, fields: Record<string, string | File | undefined>): FormData {
  const declared: Record<string, string> = (API[call] as { form?: Record<string, string> }).form ?? {};
  const fd = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (!(name in declared)) throw new Error(`${name} is not a form field of ${call} (src/api.json)`);
    if (value !== undefined && value !== "") fd.append(name, value);
  }
  return fd;
}

export const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((x) => x.toString(16).padStart(2, "0")).join("");

/** Add the signature headers (below) for ``method`` ``path`` (with its ?query) and ``body`` to
 * ``headers``; nothing when no GATEWAY_SECRET is set (a gateway without one serves loopback only). */
export async function sign(env: AppEnv, headers: Headers, method: string, path: string,
                           body: Uint8Array = new Uint8Array()): Promise<void> {
  if (!env.GATEWAY_SECRET) return;
  await signDigest(env, headers, method, path, hex(await crypto.subtle.digest("SHA-256", body)));
}

/** As ``sign``, for a body whose hex SHA-256 is already known (a streamed body, hashed as it
 * was stored: src/verify.ts). */
export async function signDigest(env: AppEnv, headers: Headers, method: string, path: string,
                                 bodyHash: string): Promise<void> {
  if (!env.GATEWAY_SECRET) return;
  const ts = String(Math.floor(Date.now() / 1000));
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(env.GATEWAY_SECRET),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const msg = new TextEncoder().encode(`${method}\n${path}\n${ts}\n${bodyHash}`);
  headers.set("X-Faceswap-Timestamp", ts);
  headers.set("X-Faceswap-Content-SHA256", bodyHash);
  headers.set("X-Faceswap-Signature", hex(await crypto.subtle.sign("HMAC", key, msg)));
}

/**
 * Call the gateway, signed: X-Faceswap-Content-SHA256 = hex SHA-256(body) and
 * X-Faceswap-Signature = hex HMAC-SHA256(secret, METHOD \n PATH[?QUERY] \n TIMESTAMP \n that hash),
 * as gateway/core/guard.py checks (from the headers, before it reads the body).
 */
export async function callGateway(env: AppEnv, call: GatewayCall, path: string, body?: FormData,
                                  accept = "application/json"): Promise<Response> {
  const method = API[call].method;
  let bytes = new Uint8Array();
  const headers = new Headers({ Accept: accept });
  if (body) {
    const req = new Request("http://form.local/", { method: "POST", body });
    bytes = new Uint8Array(await req.arrayBuffer());
    headers.set("Content-Type", req.headers.get("Content-Type") ?? "multipart/form-data");
  }
  await sign(env, headers, method, path, bytes);
  return fetch(env.GATEWAY_URL.replace(/\/$/, "") + path, {
    method, headers, body: body ? bytes : undefined,
  });
}

/** Turn a failed gateway answer into the Worker's answer: 4xx pass through with their JSON
 * body; 503 stays 503 (`overloaded` when the gateway is at capacity, else service_not_ready)
 * with the gateway's Retry-After; 504 stays 504 (deadline_exceeded); anything else is 502. */
export async function gatewayFailure(res: Response): Promise<Response> {
  let body: { code?: string; message?: string } = {};
  try {
    body = await res.json();
  } catch {
    body = {};
  }
  if (res.status >= 400 && res.status < 500) {
    return Response.json({ code: body.code ?? "bad_request", message: body.message ?? "The request was refused." },
      { status: res.status });
  }
  if (res.status === 503) {
    const busy = body.code === "overloaded";
    return Response.json(busy
      ? { code: "overloaded", message: "The face-swap service is busy; try again in a few seconds." }
      : { code: "service_not_ready", message: "The face-swap service is not ready; try again shortly." },
    { status: 503, headers: { "Retry-After": res.headers.get("Retry-After") ?? "5" } });
  }
  if (res.status === 504) {
    return Response.json({ code: "deadline_exceeded", message: "The face swap took too long and was stopped." },
      { status: 504 });
  }
  return Response.json({ code: "gateway_error", message: `The face-swap service failed (${res.status}).` },
    { status: 502 });
}
