import { type AppEnv, errorResponse, MB, sizedBody } from "./env";
import { newKey } from "./storage";

/**
 * A video (or zip of images) goes from the browser into R2 as an R2 multipart upload, each part
 * streamed through the Worker (never held in memory):
 *
 *   POST   /api/uploads                          {"size": bytes} -> 201 {id, uploadId, partBytes, parts}
 *   PUT    /api/uploads/<id>/parts/<n>?uploadId= the n-th PART_BYTES of the file (n from 1) -> {partNumber, etag}
 *   POST   /api/uploads/<id>/complete?uploadId=  {"parts": [{partNumber, etag}, ...]} -> {id, size}
 *   DELETE /api/uploads/<id>?uploadId=           abort -> 204
 *
 * The upload is then named by ``id`` in POST /api/jobs. Every part but the last is exactly
 * PART_BYTES (R2 wants equal parts of at least 5 MiB); a finished upload over MAX_VIDEO_BYTES is
 * deleted (413). Its format is judged from its first bytes by POST /api/jobs.
 */
export const PART_BYTES = 10 * 1048576;

export const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** POST /api/uploads */
export async function handleCreateUpload(request: Request, env: AppEnv): Promise<Response> {
  const limit = Number(env.MAX_VIDEO_BYTES);
  let size = NaN;
  try {
    size = Number(((await request.json()) as { size?: unknown }).size);
  } catch { /* below */ }
  if (!Number.isSafeInteger(size) || size <= 0) {
    return errorResponse(400, "bad_upload", 'Send JSON {"size": <bytes>} with the size of the file.');
  }
  if (size > limit) {
    return errorResponse(413, "payload_too_large", `The video is ${MB(size)}; the limit is ${MB(limit)}.`);
  }
  const key = newKey("uploads");
  // A content type that is not compressed on the way (Cloudflare, and wrangler dev as it,
  // would gzip a body without one); the format is judged from the bytes later.
  const upload = await env.FILES.createMultipartUpload(key, { httpMetadata: { contentType: "application/octet-stream" } });
  return Response.json({ id: key.slice("uploads/".length), uploadId: upload.uploadId, partBytes: PART_BYTES,
    parts: Math.ceil(size / PART_BYTES) }, { status: 201 });
}

/** The multipart upload an /api/uploads/<id>... request names, or its 400. */
function resume(request: Request, env: AppEnv, id: string): R2MultipartUpload | Response {
  const uploadId = new URL(request.url).searchParams.get("uploadId");
  if (!UPLOAD_ID.test(id) || !uploadId) return errorResponse(400, "bad_upload", "No such upload.");
  return env.FILES.resumeMultipartUpload(`uploads/${id}`, uploadId);
}

/** PUT /api/uploads/<id>/parts/<n>: the body (Content-Length required, at most PART_BYTES)
 * streamed into R2 as part n. */
export async function handleUploadPart(request: Request, env: AppEnv, id: string, n: string): Promise<Response> {
  const upload = resume(request, env, id);
  if (upload instanceof Response) return upload;
  const part = Number(n);
  if (!Number.isInteger(part) || part < 1 || part > Math.ceil(Number(env.MAX_VIDEO_BYTES) / PART_BYTES)) {
    return errorResponse(400, "bad_upload", "No such part number.");
  }
  const body = sizedBody(request, PART_BYTES, "part");
  if (body instanceof Response) return body;
  try {
    const { partNumber, etag } = await upload.uploadPart(part, body);
    return Response.json({ partNumber, etag });
  } catch (err) {
    return errorResponse(400, "bad_upload", `The part was not stored (${String(err)}).`);
  }
}

/** POST /api/uploads/<id>/complete */
export async function handleCompleteUpload(request: Request, env: AppEnv, id: string): Promise<Response> {
  const upload = resume(request, env, id);
  if (upload instanceof Response) return upload;
  let parts: R2UploadedPart[];
  try {
    parts = ((await request.json()) as { parts: R2UploadedPart[] }).parts;
    if (!Array.isArray(parts) || !parts.length) throw new Error("no parts");
    parts = parts.map((p) => ({ partNumber: Number(p.partNumber), etag: String(p.etag) }));
  } catch {
    return errorResponse(400, "bad_upload", 'Send JSON {"parts": [{"partNumber": 1, "etag": "..."}, ...]}.');
  }
  let obj: R2Object;
  try {
    obj = await upload.complete(parts);
  } catch (err) {
    return errorResponse(400, "bad_upload", `The upload could not be completed (${String(err)}).`);
  }
  const limit = Number(env.MAX_VIDEO_BYTES);
  if (obj.size > limit) {
    await env.FILES.delete(obj.key);
    return errorResponse(413, "payload_too_large", `The video is ${MB(obj.size)}; the limit is ${MB(limit)}.`);
  }
  return Response.json({ id, size: obj.size });
}

/** DELETE /api/uploads/<id>: abort an unfinished upload (its parts are dropped). */
export async function handleAbortUpload(request: Request, env: AppEnv, id: string): Promise<Response> {
  const upload = resume(request, env, id);
  if (upload instanceof Response) return upload;
  try {
    await upload.abort();
  } catch { /* already gone */ }
  return new Response(null, { status: 204 });
}
