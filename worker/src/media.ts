import { type AppEnv, CONTENT_TYPES, errorResponse, sizedBody } from "./env";
import { resultMetadata } from "./storage";

/**
 * Signed media URLs: how the gateway reads a job's input from R2 and writes its result there,
 * through the Worker, without the Worker ever holding the bytes (both directions stream).
 *
 *   GET /api/media/<key>?expires=<unix s>&signature=<hex>   the object (200, streamed; 404 if missing)
 *   PUT /api/media/<key>?expires=<unix s>&signature=<hex>   body -> R2 at <key> (Content-Length required)
 *
 * signature = hex HMAC-SHA256(GATEWAY_SECRET, `${METHOD}\n/api/media/${key}\n${expires}`); HEAD
 * is signed as GET. Refused: a wrong signature (403 bad_media_signature), one past ``expires``
 * (403 media_url_expired), a key the method may not name (403 media_key_not_allowed). Only the
 * Worker's own keys are allowed: uploads (GET) and results (PUT). These URLs are not rate
 * limited: only holders of a signature (the gateway) can use them, for jobs that already counted
 * against the submitting client's budget. Shaped like R2/S3 presigned URLs, so the gateway can
 * treat both alike. A deployed Worker takes request bodies up to 100 MB (Free and Pro plans;
 * 200 MB Business, 500 MB Enterprise): where results may be larger, give the gateway R2
 * presigned PUT URLs (S3 API, up to 5 GiB) for result_url instead.
 */
export const MEDIA_KEYS: Record<string, RegExp> = {
  GET: /^uploads\/[0-9a-f-]{36}$/,
  PUT: /^results\/[0-9a-f-]{36}\.(mp4|zip)$/,
};

const enc = new TextEncoder();
const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((x) => x.toString(16).padStart(2, "0")).join("");

function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

const message = (method: string, key: string, expires: string) => enc.encode(`${method}\n/api/media/${key}\n${expires}`);

/** A signed URL for ``method`` on ``key``, valid MEDIA_URL_TTL_S seconds; its origin is
 * PUBLIC_URL, else ``origin`` (that of the request being served). */
export async function mediaUrl(env: AppEnv, origin: string, method: "GET" | "PUT", key: string): Promise<string> {
  if (!env.GATEWAY_SECRET) throw new Error("GATEWAY_SECRET is not set: media URLs cannot be signed");
  const expires = String(Math.floor(Date.now() / 1000) + Number(env.MEDIA_URL_TTL_S));
  const sig = hex(await crypto.subtle.sign("HMAC", await hmacKey(env.GATEWAY_SECRET), message(method, key, expires)));
  return `${(env.PUBLIC_URL || origin).replace(/\/$/, "")}/api/media/${key}?expires=${expires}&signature=${sig}`;
}

/** null when the URL is signed for this method and key and not expired; else the 403. */
async function refused(request: Request, env: AppEnv, method: string, key: string): Promise<Response | null> {
  const q = new URL(request.url).searchParams;
  const expires = q.get("expires") ?? "", sig = q.get("signature") ?? "";
  const bad = () => errorResponse(403, "bad_media_signature", "This media URL is not validly signed.");
  if (!env.GATEWAY_SECRET || !/^\d{1,12}$/.test(expires) || !/^([0-9a-f]{2}){32}$/.test(sig)) return bad();
  const sigBytes = new Uint8Array(sig.match(/../g)!.map((h) => parseInt(h, 16)));
  // verify() compares in constant time.
  if (!(await crypto.subtle.verify("HMAC", await hmacKey(env.GATEWAY_SECRET), sigBytes, message(method, key, expires)))) {
    return bad();
  }
  if (Number(expires) < Date.now() / 1000) return errorResponse(403, "media_url_expired", "This media URL has expired.");
  if (!MEDIA_KEYS[method]?.test(key)) {
    return errorResponse(403, "media_key_not_allowed", `${method} is not allowed on this object.`);
  }
  return null;
}

/** GET/HEAD/PUT /api/media/<key>, signed (see above). */
export async function handleMedia(request: Request, env: AppEnv, key: string): Promise<Response> {
  const method = request.method === "HEAD" ? "GET" : request.method;
  const no = await refused(request, env, method, key);
  if (no) return no;
  if (method === "GET") {
    return (await serveObject(env, key, request)) ?? errorResponse(404, "not_found", "No such object.");
  }
  const body = sizedBody(request, Number(env.MAX_RESULT_BYTES), "result");
  if (body instanceof Response) return body;
  const ext = key.slice(key.lastIndexOf(".") + 1);
  try {
    const obj = await env.FILES.put(key, body, resultMetadata(env, CONTENT_TYPES[ext]));
    return Response.json({ key, size: obj.size }, { status: 201 });
  } catch (err) {
    return errorResponse(400, "incomplete_body", `The body did not arrive whole (${String(err)}).`);
  }
}

/**
 * Objects over this many bytes are read from R2 in ranges of this size, one after the other,
 * each passed on as it arrives (with backpressure): whatever the store reads ahead of a slow
 * reader stays within one range. (Without this, wrangler's local R2 reads a multipart object
 * ahead whole: +169 MiB of workerd RSS for a 150 MiB upload; test/upload_memory.test.mjs.)
 */
export const READ_CHUNK = 8 * 1048576;

/** Write ``obj`` (as it was when ``obj`` was read: same ETag) into ``writable`` in ranges of
 * READ_CHUNK, one after the other, with backpressure; ``writable`` is left open (and unlocked). */
export async function pipeObject(env: AppEnv, obj: R2Object, writable: WritableStream): Promise<void> {
  for (let offset = 0; offset < obj.size; offset += READ_CHUNK) {
    const part = await env.FILES.get(obj.key, { range: { offset, length: Math.min(READ_CHUNK, obj.size - offset) },
      onlyIf: { etagMatches: obj.etag } });
    if (!part || !("body" in part)) throw new Error(`${obj.key} changed or went while it was read`);
    await (part as R2ObjectBody).body.pipeTo(writable, { preventClose: true });
  }
}

function rangedBody(env: AppEnv, obj: R2Object): ReadableStream {
  const { readable, writable } = new FixedLengthStream(obj.size);
  pipeObject(env, obj, writable).then(() => writable.close())
    .catch((err) => writable.abort(err).catch(() => { /* the reader has gone */ }));
  return readable;
}

/**
 * An R2 object as a streamed response (HEAD: headers only), with its content type (else
 * application/octet-stream), ETag and length; a Range request gets 206 with that part only
 * (video players seek this way). null when the object is missing; ``headers`` are added.
 */
export async function serveObject(env: AppEnv, key: string, request: Request,
                                  headers: HeadersInit = {}): Promise<Response | null> {
  const ranged = request.method === "GET" && request.headers.has("Range");
  let obj: R2Object | R2ObjectBody | null;
  try {
    obj = ranged ? await env.FILES.get(key, { range: request.headers }) : await env.FILES.head(key);
  } catch (err) {
    if (!ranged) throw err;
    return errorResponse(416, "bad_range", "That byte range cannot be served.");
  }
  if (!obj) return null;
  const h = new Headers(headers);
  obj.writeHttpMetadata(h);
  // Media are never compressed on the way (Cloudflare, and wrangler dev as it, gzip a body
  // without a content type): the gateway gets the stored bytes and their length.
  if (!h.has("Content-Type")) h.set("Content-Type", "application/octet-stream");
  h.set("ETag", obj.httpEtag);
  h.set("Accept-Ranges", "bytes");
  const r = obj.range as { offset?: number; length?: number; suffix?: number } | undefined;
  if (ranged && "body" in obj && r) {
    const start = r.suffix !== undefined ? obj.size - r.suffix : r.offset ?? 0;
    const length = r.length ?? obj.size - start;
    h.set("Content-Range", `bytes ${start}-${start + length - 1}/${obj.size}`);
    h.set("Content-Length", String(length));
    return new Response((obj as R2ObjectBody).body, { status: 206, headers: h });
  }
  h.set("Content-Length", String(obj.size));
  if (request.method === "HEAD") return new Response(null, { headers: h });
  if (obj.size > READ_CHUNK) return new Response(rangedBody(env, obj), { headers: h });
  const whole = await env.FILES.get(key, { onlyIf: { etagMatches: obj.etag } });
  return whole && "body" in whole ? new Response((whole as R2ObjectBody).body, { headers: h }) : null;
}
