/** Bindings and variables of the Worker (wrangler.jsonc; GATEWAY_SECRET is a Worker secret). */
export interface AppEnv {
  FILES: R2Bucket;
  /** Rate limits per client (src/limits.ts): POST /api/swap + POST /api/jobs, the reads, the
   * uploads, the opening of live streams, the files checked (POST /api/verify). */
  SUBMIT_LIMITER: RateLimit;
  READ_LIMITER: RateLimit;
  UPLOAD_LIMITER: RateLimit;
  STREAM_LIMITER: RateLimit;
  VERIFY_LIMITER: RateLimit;
  GATEWAY_URL: string;
  /** Signs the calls to the gateway and the media URLs handed to it. */
  GATEWAY_SECRET?: string;
  /** Bytes: largest photo; largest video (or zip) upload; largest result the gateway may store. */
  MAX_UPLOAD_BYTES: string;
  MAX_VIDEO_BYTES: string;
  MAX_RESULT_BYTES: string;
  /** Bytes: largest file POST /api/verify checks (streamed through R2, never held). */
  MAX_VERIFY_BYTES: string;
  /** Bytes: largest message of a live stream (a frame, or the first message with the base64
   * source photo) the Worker relays; frames are also held to the gateway's own limit. */
  MAX_STREAM_MESSAGE_BYTES: string;
  /** Seconds the Worker waits for the gateway to open a live stream. */
  STREAM_OPEN_TIMEOUT_S: string;
  /** Seconds a signed media URL stays valid. */
  MEDIA_URL_TTL_S: string;
  /** Origin used in media URLs; empty: the origin of the request that made them. */
  PUBLIC_URL?: string;
  /** Seconds a result (and an unused upload) is kept. */
  RESULT_TTL_S: string;
  /** Swaps, video jobs and live streams a client may start per UTC day ("0": no daily quota; src/limits.ts). */
  DAILY_QUOTA?: string;
}

/** A JSON error body: a machine-readable code and a sentence for a person. */
export function errorResponse(status: number, code: string, message: string, headers: HeadersInit = {}): Response {
  return Response.json({ code, message }, { status, headers });
}

export const MB = (n: number) => `${Math.round(n / 1048576)} MB`;

export const IMAGE_TYPES: Record<string, string> = { jpeg: "image/jpeg", png: "image/png", webp: "image/webp" };

export const CONTENT_TYPES: Record<string, string> = {
  ...IMAGE_TYPES,
  mp4: "video/mp4",
  mkv: "video/x-matroska",
  zip: "application/zip",
};

/**
 * The request's body as a stream of exactly its Content-Length bytes (R2 must know an object's
 * length before it is written; FixedLengthStream also errors if the body is longer or shorter).
 * The bytes flow through with backpressure, never collected. A Response when the length is
 * missing (411) or over ``limit`` bytes (413).
 */
export function sizedBody(request: Request, limit: number, what: string): ReadableStream | Response {
  const declared = request.headers.get("Content-Length");
  const length = Number(declared);
  if (declared === null || declared === "" || !Number.isSafeInteger(length) || length < 0) {
    return errorResponse(411, "length_required", "Send the body with a Content-Length.");
  }
  if (length > limit) {
    return errorResponse(413, "payload_too_large", `The ${what} is ${MB(length)}; the limit is ${MB(limit)}.`);
  }
  const fixed = new FixedLengthStream(length);
  const body = request.body ?? new Blob([]).stream();
  body.pipeTo(fixed.writable).catch(() => { /* the reader (R2) sees the error */ });
  return fixed.readable;
}
