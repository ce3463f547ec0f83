import { type AppEnv, CONTENT_TYPES, errorResponse, IMAGE_TYPES, sniff } from "./env";
import { callGateway, gatewayFailure } from "./gateway";
import { deleteUploads, expired, newKey, putResult, putUpload } from "./storage";

const MB = (n: number) => `${Math.round(n / 1048576)} MB`;
const EXT: Record<string, string> = { jpeg: "jpg", png: "png", webp: "webp", mp4: "mp4", mkv: "mkv", zip: "zip" };

type Checked = { bytes: Uint8Array; fmt: string } | Response;

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

async function checkFile(value: File | string | null, what: string, limit: number,
                         allowed: string[]): Promise<Checked> {
  if (!(value instanceof File) || value.size === 0) {
    return errorResponse(400, "missing_file", `Choose a ${what}.`);
  }
  if (value.size > limit) {
    return errorResponse(413, "payload_too_large", `The ${what} is ${MB(value.size)}; the limit is ${MB(limit)}.`);
  }
  const bytes = new Uint8Array(await value.arrayBuffer());
  const fmt = sniff(bytes);
  if (!fmt || !allowed.includes(fmt)) {
    return errorResponse(415, "unsupported_media_type",
      `The ${what} is not a supported file: use ${allowed.map((a) => a.toUpperCase()).join(", ")}.`);
  }
  return { bytes, fmt };
}

/** Store a checked upload in R2 (its key added to ``keys``, for deletion) and add it to the
 * form for the gateway under ``role``. */
async function keep(env: AppEnv, fd: FormData, keys: string[], role: string, file: { bytes: Uint8Array; fmt: string }) {
  const type = CONTENT_TYPES[file.fmt];
  keys.push(await putUpload(env, role, file.bytes, type));
  fd.append(role, new Blob([file.bytes], { type }), `${role}.${EXT[file.fmt]}`);
}

/** Store the uploads, call the gateway with them, then delete them whatever the answer: the
 * gateway has the bytes in the request, and (for a job) its own copy of the video and the
 * source's embedding before it answers 202, so nothing reads the R2 copies again. */
async function forward(env: AppEnv, path: string, files: [string, { bytes: Uint8Array; fmt: string }][],
                       options: [string, string][] = [], accept?: string): Promise<Response> {
  const fd = new FormData();
  const keys: string[] = [];
  try {
    for (const [role, file] of files) await keep(env, fd, keys, role, file);
    for (const [k, v] of options) fd.append(k, v);
    return await gatewayCall(env, "POST", path, fd, accept);
  } finally {
    await deleteUploads(env, keys);
  }
}

async function gatewayCall(env: AppEnv, method: string, path: string, body?: FormData,
                           accept?: string): Promise<Response> {
  try {
    return await callGateway(env, method, path, body, accept);
  } catch (err) {
    const res = errorResponse(502, "gateway_unreachable", `The face-swap service cannot be reached (${String(err)}).`);
    OWN.add(res);
    return res;
  }
}

/** Responses made here (not by the gateway): passed on as they are. */
const OWN = new WeakSet<Response>();
const failure = (res: Response) => (OWN.has(res) ? res : gatewayFailure(res));

/** POST /api/swap: source + target photos -> swapped image stored in R2, JSON with its URL. */
export async function handleSwap(request: Request, env: AppEnv): Promise<Response> {
  const limit = Number(env.MAX_UPLOAD_BYTES);
  const form = await readForm(request, 2 * limit + 65536);
  if (form instanceof Response) return form;
  const images = Object.keys(IMAGE_TYPES);
  const source = await checkFile(form.get("source"), "source photo", limit, images);
  if (source instanceof Response) return source;
  const target = await checkFile(form.get("target"), "target photo", limit, images);
  if (target instanceof Response) return target;
  const opts: [string, string][] = [];
  for (const opt of ["selection", "face_index", "output_format"]) {
    const v = form.get(opt);
    if (typeof v === "string" && v) opts.push([opt, v]);
  }
  const res = await forward(env, "/v1/swap", [["source", source], ["target", target]], opts, "image/*");
  if (res.status >= 400) return failure(res);
  const type = (res.headers.get("Content-Type") ?? "image/jpeg").split(";")[0];
  const fmt = Object.keys(IMAGE_TYPES).find((k) => IMAGE_TYPES[k] === type) ?? "jpeg";
  const key = newKey("results", EXT[fmt]);
  await putResult(env, key, await res.arrayBuffer(), type);
  return Response.json({
    result: `/api/results/${key.slice("results/".length)}`,
    format: fmt,
    facesDetected: Number(res.headers.get("X-Faces-Detected") ?? "0"),
    facesSwapped: Number(res.headers.get("X-Faces-Swapped") ?? "0"),
    faces: JSON.parse(res.headers.get("X-Faces") ?? "[]"),
    standInModels: (res.headers.get("X-Stand-In-Models") ?? "").split(",").filter(Boolean),
  });
}

/** POST /api/jobs: source photo + a video (or several images) -> a gateway job. */
export async function handleCreateJob(request: Request, env: AppEnv): Promise<Response> {
  const vlimit = Number(env.MAX_VIDEO_BYTES);
  const form = await readForm(request, vlimit + Number(env.MAX_UPLOAD_BYTES) + 65536);
  if (form instanceof Response) return form;
  const source = await checkFile(form.get("source"), "source photo", Number(env.MAX_UPLOAD_BYTES),
    Object.keys(IMAGE_TYPES));
  if (source instanceof Response) return source;
  const video = await checkFile(form.get("video"), "video", vlimit, ["mp4", "mkv"]);
  if (video instanceof Response) return video;
  const res = await forward(env, "/v1/jobs", [["source", source], ["video", video]]);
  if (res.status >= 400) return failure(res);
  const job = (await res.json()) as { id: string; status: string };
  return Response.json({ id: job.id, status: job.status, poll: `/api/jobs/${job.id}` }, { status: 202 });
}

/** GET /api/jobs/:id: the job's progress; once done, its result is copied to R2 and linked. */
export async function handleGetJob(id: string, env: AppEnv): Promise<Response> {
  if (!/^[0-9a-f]{32}$/.test(id)) return errorResponse(404, "not_found", "No such job.");
  const res = await gatewayCall(env, "GET", `/v1/jobs/${id}`);
  if (res.status >= 400) return failure(res);
  const job = (await res.json()) as Record<string, unknown> & { status: string; kind: string };
  let result: string | undefined;
  if (job.status === "done") {
    const ext = job.kind === "video" ? "mp4" : "zip";
    const key = `results/${id}.${ext}`;
    if (!(await env.FILES.head(key))) {
      const file = await gatewayCall(env, "GET", `/v1/jobs/${id}/result`, undefined, "*/*");
      if (file.status >= 400) return failure(file);
      await putResult(env, key, await file.arrayBuffer(), CONTENT_TYPES[ext]);
    }
    result = `/api/results/${id}.${ext}`;
  }
  return Response.json({
    id, status: job.status, progress: job.progress, done: job.done, total: job.total, eta_s: job.eta_s,
    warnings: job.warnings, error: job.error, result,
  });
}

/** GET /api/results/:name: a stored result, with its content type; 404 once expired. */
export async function handleResult(name: string, env: AppEnv): Promise<Response> {
  if (!/^[0-9a-f-]{32,36}\.(jpg|png|webp|mp4|zip)$/.test(name)) {
    return errorResponse(404, "not_found", "No such result.");
  }
  const key = `results/${name}`;
  const obj = await env.FILES.get(key);
  if (!obj) return errorResponse(404, "not_found", "No such result (it may have expired).");
  if (expired(obj)) {
    await env.FILES.delete(key);
    return errorResponse(404, "not_found", "This result has expired.");
  }
  const headers = new Headers();
  obj.writeHttpMetadata(headers);
  headers.set("Cache-Control", "private, max-age=3600");
  headers.set("Content-Disposition", `inline; filename="faceswap-${name}"`);
  return new Response(obj.body, { headers });
}
