/** Bindings and variables of the Worker (wrangler.jsonc; GATEWAY_SECRET is a Worker secret). */
export interface AppEnv {
  FILES: R2Bucket;
  /** Rate limits per client (src/limits.ts): POST /api/swap + POST /api/jobs, and the reads. */
  SUBMIT_LIMITER: RateLimit;
  READ_LIMITER: RateLimit;
  GATEWAY_URL: string;
  GATEWAY_SECRET?: string;
  MAX_UPLOAD_BYTES: string;
  MAX_VIDEO_BYTES: string;
  RESULT_TTL_S: string;
}

/** A JSON error body: a machine-readable code and a sentence for a person. */
export function errorResponse(status: number, code: string, message: string, headers: HeadersInit = {}): Response {
  return Response.json({ code, message }, { status, headers });
}

export const IMAGE_TYPES: Record<string, string> = { jpeg: "image/jpeg", png: "image/png", webp: "image/webp" };

/** Format judged from the first bytes, never from a name or a client's content type. */
export function sniff(bytes: Uint8Array): string | null {
  const b = bytes;
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "png";
  const ascii = (i: number, n: number) => String.fromCharCode(...b.slice(i, i + n));
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") return "webp";
  if (b.length >= 12 && ["ftyp", "moov", "mdat", "wide", "free"].includes(ascii(4, 4))) return "mp4";
  if (b.length >= 4 && b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3) return "mkv";
  return null;
}

export const CONTENT_TYPES: Record<string, string> = {
  ...IMAGE_TYPES,
  mp4: "video/mp4",
  mkv: "video/x-matroska",
  zip: "application/zip",
};
