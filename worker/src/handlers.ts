import { type AppEnv, errorResponse, IMAGE_TYPES, MB } from "./env";
import { FORMATS, type Format, HEAD, sniff } from "./formats";
import { apiForm, apiPath, callGateway, type GatewayCall, gatewayFailure } from "./gateway";
import { mediaUrl, serveObject } from "./media";
import { deleteUploads, expired, newKey, resultMetadata } from "./storage";
import { UPLOAD_ID } from "./uploads";

/** File extensions of the images POST /v1/swap answers with (env.ts IMAGE_TYPES). */
const EXT: Record<string, string> = { jpeg: "jpg", png: "png", webp: "webp" };

type Checked = { bytes: Uint8Array; fmt: Format } | Response;

/** The photo formats the gateway reads (pipeline/codec.py SUPPORTED_INPUT: the table's images). */
const PHOTOS = FORMATS.filter((f) => f.kind === "image").map((f) => f.name);

async function readForm(request: Request, limit: number): Promise<FormData | Response> {
  const declared = Number(request.headers.get("Content-Length") ?? "0");
  if (declared > limit) {
    return errorResponse(413, "payload_too_large", `The upload is ${MB(declared)}; the limit is ${MB(limit)}.`);
  }
  try {
    return await request.formData();
  } catch {
    return errorResponse(400, "bad_form", "Send the files as multipart/form-data.");
  }
}

/** A photo from the form (at most MAX_UPLOAD_BYTES, so it may be held in memory), its format
 * judged from its bytes. */
async function checkPhoto(value: File | string | null, what: string, env: AppEnv): Promise<Checked> {
  const limit = Number(env.MAX_UPLOAD_BYTES);
  if (!(value instanceof File) || value.size === 0) {
    return errorResponse(400, "missing_file", `Choose a ${what}.`);
  }
  if (value.size > limit) {
    return errorResponse(413, "payload_too_large", `The ${what} is ${MB(value.size)}; the limit is ${MB(limit)}.`);
  }
  const bytes = new Uint8Array(await value.arrayBuffer());
  const fmt = sniff(bytes);
  if (!fmt || fmt.kind !== "image") {
    return errorResponse(415, "unsupported_media_type",
      `The ${what} is not a supported file: use ${PHOTOS.map((a) => a.toUpperCase()).join(", ")}.`);
  }
  return { bytes, fmt };
}

const photo = (role: string, p: { bytes: Uint8Array; fmt: Format }) =>
  new File([p.bytes], `${role}.${p.fmt.extensions[0]}`, { type: p.fmt.mime });

async function gatewayCall(env: AppEnv, call: GatewayCall, path: string, body?: FormData,
                           accept?: string): Promise<Response> {
  try {
    return await callGateway(env, call, path, body, accept);
  } catch (err) {
    const res = errorResponse(502, "gateway_unreachable", `The face-swap service cannot be reached (${String(err)}).`);
    OWN.add(res);
    return res;
  }
}

/** Responses made here (not by the gateway): passed on as they are. */
const OWN = new WeakSet<Response>();
const failure = (res: Response) => (OWN.has(res) ? res : gatewayFailure(res));

/** POST /api/swap: source + target photos -> the gateway (in the signed request, not via R2)
 * -> the swapped image streamed into R2 -> JSON with its URL. */
export async function handleSwap(request: Request, env: AppEnv): Promise<Response> {
  const form = await readForm(request, 2 * Number(env.MAX_UPLOAD_BYTES) + 65536);
  if (form instanceof Response) return form;
  const source = await checkPhoto(form.get("source"), "source photo", env);
  if (source instanceof Response) return source;
  const target = await checkPhoto(form.get("target"), "target photo", env);
  if (target instanceof Response) return target;
  const option = (name: string) => {
    const v = form.get(name);
    return typeof v === "string" ? v : undefined;
  };
  const fd = apiForm("swap", {
    source: photo("source", source), target: photo("target", target),
    selection: option("selection"), face_index: option("face_index"), output_format: option("output_format"),
  });
  const res = await gatewayCall(env, "swap", apiPath("swap"), fd, "image/*");
  if (res.status >= 400) return failure(res);
  const type = (res.headers.get("Content-Type") ?? "image/jpeg").split(";")[0];
  const fmt = Object.keys(IMAGE_TYPES).find((k) => IMAGE_TYPES[k] === type) ?? "jpeg";
  const key = newKey("results", EXT[fmt]);
  // The gateway's answer has a Content-Length, so R2 takes its body as a stream.
  await env.FILES.put(key, res.body, resultMetadata(env, type));
  return Response.json({
    result: `/api/results/${key.slice("results/".length)}`,
    format: fmt,
    facesDetected: Number(res.headers.get("X-Faces-Detected") ?? "0"),
    facesSwapped: Number(res.headers.get("X-Faces-Swapped") ?? "0"),
    faces: JSON.parse(res.headers.get("X-Faces") ?? "[]"),
    standInModels: (res.headers.get("X-Stand-In-Models") ?? "").split(",").filter(Boolean),
  });
}

/**
 * POST /api/jobs, a small multipart form: `upload` (the id of a finished /api/uploads upload:
 * an MP4/MKV video, or a zip of images for a batch) and `source` (a photo) or `source_face_id`.
 * The gateway gets signed URLs, never the bytes: `video_url` (or `archive_url`) to read the
 * upload, `result_url` to write the result into R2. The upload is deleted if the job is refused
 * (here or by the gateway), else once the job ends (GET /api/jobs/:id).
 */
export async function handleCreateJob(request: Request, env: AppEnv): Promise<Response> {
  const form = await readForm(request, Number(env.MAX_UPLOAD_BYTES) + 65536);
  if (form instanceof Response) return form;
  const id = form.get("upload");
  if (typeof id !== "string" || !UPLOAD_ID.test(id)) return errorResponse(400, "missing_file", "Upload the video first.");
  const res = await startJob(request, env, form, `uploads/${id}`);
  if (res.status >= 400) await deleteUploads(env, [`uploads/${id}`]);
  return res;
}

async function startJob(request: Request, env: AppEnv, form: FormData, key: string): Promise<Response> {
  const fields: Record<string, string | File> = {};
  const faceId = form.get("source_face_id");
  if (typeof faceId === "string" && faceId) {
    fields.source_face_id = faceId.slice(0, 64);
  } else {
    const source = await checkPhoto(form.get("source"), "source photo", env);
    if (source instanceof Response) return source;
    fields.source = photo("source", source);
  }
  const head = await env.FILES.get(key, { range: { offset: 0, length: HEAD } });
  if (!head) return errorResponse(404, "upload_not_found", "The uploaded video is gone; upload it again.");
  // as the gateway's jobs judge their video_url (a video of the table) and archive_url (a zip)
  const fmt = sniff(new Uint8Array(await head.arrayBuffer()));
  if (fmt?.kind !== "video" && fmt?.name !== "zip") {
    return errorResponse(415, "unsupported_media_type",
      "The upload is not a supported video: use MP4, MOV, MKV, WebM or AVI (or a zip of photos).");
  }
  if (!env.GATEWAY_SECRET) {
    return errorResponse(500, "not_configured", "GATEWAY_SECRET is not set: the Worker cannot sign media URLs.");
  }
  const zip = fmt?.name === "zip";
  const result = newKey("results", zip ? "zip" : "mp4");
  const origin = new URL(request.url).origin;
  fields[zip ? "archive_url" : "video_url"] = await mediaUrl(env, origin, "GET", key);
  fields.result_url = await mediaUrl(env, origin, "PUT", result);
  const res = await gatewayCall(env, "createJob", apiPath("createJob"), apiForm("createJob", fields));
  if (res.status >= 400) return failure(res);
  const job = (await res.json()) as { id: string; status: string };
  if (!JOB_ID.test(job.id)) return errorResponse(502, "gateway_error", "The face-swap service answered oddly.");
  await env.FILES.put(`jobs/${job.id}`, "", { customMetadata: { upload: key, result } });
  return Response.json({ id: job.id, status: job.status, poll: `/api/jobs/${job.id}` }, { status: 202 });
}

const JOB_ID = /^[0-9a-f]{32}$/;
const ENDED = ["done", "failed", "cancelled"];

/** GET /api/jobs/:id: a job this Worker created; its progress from the gateway; once it has
 * ended, its upload is deleted and (when done) the result in R2 is linked. */
export async function handleGetJob(id: string, env: AppEnv): Promise<Response> {
  const record = JOB_ID.test(id) ? await env.FILES.head(`jobs/${id}`) : null;
  if (!record) return errorResponse(404, "not_found", "No such job.");
  const { upload, result } = record.customMetadata as { upload: string; result: string };
  const res = await gatewayCall(env, "getJob", apiPath("getJob", id));
  if (res.status >= 400) return failure(res);
  const job = (await res.json()) as Record<string, unknown> & { status: string };
  let { status, error, error_code } = job;
  let link: string | undefined;
  if (ENDED.includes(status)) await deleteUploads(env, [upload]);
  if (status === "done") {
    if (job.result_url_used && (await env.FILES.head(result))) {
      link = `/api/results/${result.slice("results/".length)}`;
    } else {
      status = "failed";
      error_code = "result_missing";
      error = "The job finished but its result did not arrive in storage.";
    }
  }
  return Response.json({
    id, status, progress: job.progress, done: job.done, total: job.total, eta_s: job.eta_s,
    warnings: job.warnings, error, error_code, result: link,
  });
}

/** GET /api/results/:name: a stored result streamed from R2 (Range requests get 206), with its
 * content type; 404 once expired. */
export async function handleResult(request: Request, name: string, env: AppEnv): Promise<Response> {
  if (!/^[0-9a-f-]{36}\.(jpg|png|webp|mp4|zip)$/.test(name)) {
    return errorResponse(404, "not_found", "No such result.");
  }
  const key = `results/${name}`;
  const meta = await env.FILES.head(key);
  if (!meta) return errorResponse(404, "not_found", "No such result (it may have expired).");
  if (expired(meta)) {
    await env.FILES.delete(key);
    return errorResponse(404, "not_found", "This result has expired.");
  }
  const res = await serveObject(env, key, request, {
    "Cache-Control": "private, max-age=3600",
    "Content-Disposition": `inline; filename="faceswap-${name}"`,
  });
  return res ?? errorResponse(404, "not_found", "No such result (it may have expired).");
}
