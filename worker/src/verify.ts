import { type AppEnv, errorResponse, MB } from "./env";
import { FORMATS, HEAD, sniff } from "./formats";
import { apiPath, GATEWAY_API, gatewayFailure, hex, signDigest } from "./gateway";
import { pipeObject } from "./media";
import { deleteUploads, newKey } from "./storage";

/**
 * POST /api/verify: what a file says about being AI-made, from the gateway's POST /v1/verify
 * (C2PA manifest, XMP DigitalSourceType, watermark, and whether this service made it and when).
 *
 * The request's body is the file itself, raw (as `fetch(url, {body: file})` sends a File), with
 * its Content-Length (411 without, 413 over MAX_VERIFY_BYTES, 400 `empty_file` for 0 bytes) and
 * its name, URI-encoded, in `X-File-Name` (optional: only its extension is used, by the gateway,
 * and only when the bytes say nothing). A multipart form is refused (400 `send_raw_file`).
 *
 * Streamed, never held: the gateway's signature covers the SHA-256 of the body it gets (a
 * multipart form around the file), and that hash must be in the headers before the body. So the
 * file is streamed into R2 (`verify/<uuid>`) while a DigestStream hashes the form's head, the
 * file's bytes as they pass, and the form's tail; then the gateway gets the form as a stream:
 * head, the file read back from R2 in 8 MiB ranges (src/media.ts), tail, with its
 * Content-Length. The R2 object is deleted once the gateway has answered (or failed), and
 * expires after VERIFY_HOLD_S otherwise (the hourly purge). A file that neither its first bytes
 * nor its name say is a JPEG, PNG, WebP or MP4/MOV is refused here (415) without calling the
 * gateway, which judges the same way (its own 415 is passed on like its other 4xx).
 */
export const VERIFY_HOLD_S = 3600;

/** Formats POST /v1/verify reads (provenance/verify.py FORMATS), as it judges them: from the
 * bytes, else from the name's extension. */
const BY_BYTES = ["jpeg", "png", "webp", "mp4"];
const BY_NAME = FORMATS.filter((f) => BY_BYTES.includes(f.name)).flatMap((f) => f.extensions);

/** The uploaded name, cut to characters safe in a form's header (the extension is what counts). */
export function safeName(header: string | null): string {
  let name = "";
  try {
    name = decodeURIComponent(header ?? "");
  } catch { /* not URI-encoded: below */ }
  name = (name.split(/[\\/]/).pop() ?? "").replace(/[^A-Za-z0-9._-]+/g, "_").slice(-120);
  return name.replace(/^[._]+/, "") || "file";
}

const enc = new TextEncoder();

/** POST /api/verify (see above). */
export async function handleVerify(request: Request, env: AppEnv): Promise<Response> {
  if ((request.headers.get("Content-Type") ?? "").toLowerCase().startsWith("multipart/form-data")) {
    return errorResponse(400, "send_raw_file",
      "Send the file's bytes as the request body (not a form), with its name in X-File-Name.");
  }
  const limit = Number(env.MAX_VERIFY_BYTES);
  const declared = request.headers.get("Content-Length");
  const size = Number(declared);
  if (declared === null || declared === "" || !Number.isSafeInteger(size) || size < 0) {
    return errorResponse(411, "length_required", "Send the file with a Content-Length.");
  }
  if (size > limit) {
    return errorResponse(413, "payload_too_large", `The file is ${MB(size)}; the limit is ${MB(limit)}.`);
  }
  if (size === 0 || !request.body) return errorResponse(400, "empty_file", "The file is empty (0 bytes).");
  const name = safeName(request.headers.get("X-File-Name"));
  const boundary = `----faceswap-verify-${crypto.randomUUID()}`;
  const field = Object.keys(GATEWAY_API.verify.form)[0];  // "file"
  const head = enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${name}"\r\n`
    + "Content-Type: application/octet-stream\r\n\r\n");
  const tail = enc.encode(`\r\n--${boundary}--\r\n`);
  const key = newKey("verify");
  try {
    // Into R2, hashed on the way: the form's head, then every chunk of the file as it passes.
    const digest = new crypto.DigestStream("SHA-256");
    const hashing = digest.getWriter();
    await hashing.write(head);
    let first = new Uint8Array(0);
    const tap = new TransformStream<Uint8Array, Uint8Array>({
      async transform(chunk, out) {
        if (first.length < HEAD) first = new Uint8Array([...first, ...chunk.subarray(0, HEAD - first.length)]);
        await hashing.write(chunk);
        out.enqueue(chunk);
      },
    });
    const fixed = new FixedLengthStream(size);
    request.body.pipeThrough(tap).pipeTo(fixed.writable).catch(() => { /* R2's put sees the error */ });
    let stored: R2Object;
    try {
      stored = await env.FILES.put(key, fixed.readable, {
        httpMetadata: { contentType: "application/octet-stream" },
        customMetadata: { expiresAt: String(Date.now() + VERIFY_HOLD_S * 1000) },
      });
    } catch (err) {
      return errorResponse(400, "incomplete_body", `The file did not arrive whole (${String(err)}).`);
    }
    const ext = name.includes(".") ? name.slice(name.lastIndexOf(".") + 1).toLowerCase() : "";
    if (!BY_BYTES.includes(sniff(first)?.name ?? "") && !BY_NAME.includes(ext)) {
      return errorResponse(415, "unsupported_media_type",
        "That file is not one that can be checked: use a JPEG, PNG or WebP image or an MP4 video.");
    }
    await hashing.write(tail);
    await hashing.close();
    const bodyHash = hex(await digest.digest);

    // To the gateway: the same form, streamed, with the hash it was signed with.
    const headers = new Headers({ Accept: "application/json", "Content-Type": `multipart/form-data; boundary=${boundary}` });
    await signDigest(env, headers, GATEWAY_API.verify.method, apiPath("verify"), bodyHash);
    const body = new FixedLengthStream(head.length + stored.size + tail.length);
    (async () => {
      let w = body.writable.getWriter();
      await w.write(head);
      w.releaseLock();
      await pipeObject(env, stored, body.writable);
      w = body.writable.getWriter();
      await w.write(tail);
      await w.close();
    })().catch((err) => body.writable.abort(err).catch(() => { /* the gateway has gone */ }));
    let res: Response;
    try {
      res = await fetch(env.GATEWAY_URL.replace(/\/$/, "") + apiPath("verify"),
        { method: GATEWAY_API.verify.method, headers, body: body.readable });
    } catch (err) {
      return errorResponse(502, "gateway_unreachable", `The checking service cannot be reached (${String(err)}).`);
    }
    if (res.status >= 400) return await gatewayFailure(res);
    let report: unknown;
    try {
      report = await res.json();
    } catch {
      return errorResponse(502, "gateway_error", "The checking service answered oddly.");
    }
    return Response.json(report, { headers: { "Cache-Control": "no-store" } });
  } finally {
    await deleteUploads(env, [key]);
  }
}
