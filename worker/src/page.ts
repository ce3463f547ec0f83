/** The web page: choose or drop a source photo and a target photo or video, swap, see the result.
 * A video goes straight into R2 in 10 MiB parts through /api/uploads (progress shown), then
 * POST /api/jobs names it; the page polls the job and links the result in R2. */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Face swap</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f4f6fa; }
  body { margin: 0 auto; max-width: 980px; padding: 1rem; }
  h1 { font-size: 1.5rem; }
  .pickers { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  @media (max-width: 640px) { .pickers { grid-template-columns: 1fr; } }
  .drop { border: 2px dashed #8a94a8; border-radius: 12px; padding: 1rem; background: #fff; min-height: 12rem;
          display: flex; flex-direction: column; gap: .5rem; }
  .drop.over { border-color: #2f6fed; background: #eef3ff; }
  .drop img, .drop video, #result img, #result video { max-width: 100%; max-height: 18rem; object-fit: contain; }
  label { font-weight: 600; }
  input[type=file]:focus-visible, button:focus-visible, a:focus-visible { outline: 3px solid #2f6fed; outline-offset: 2px; }
  button { font-size: 1.1rem; padding: .6rem 1.6rem; border-radius: 8px; border: 0; background: #2f6fed; color: #fff;
           margin: 1rem 0; cursor: pointer; }
  button:disabled { background: #9aa7c2; cursor: progress; }
  #status { min-height: 1.5rem; }
  #status.error { color: #b00020; font-weight: 600; }
  progress { width: 100%; }
  #result { background: #fff; border-radius: 12px; padding: 1rem; }
  #result[hidden] { display: none; }
</style>
</head>
<body>
<main>
  <h1>Face swap</h1>
  <p>Choose (or drop) a photo of the face you want, and a photo or video to put it into.</p>
  <form id="form">
    <div class="pickers">
      <div class="drop" id="drop-source">
        <label for="source">Source photo (the face you want)</label>
        <input id="source" name="source" type="file" accept="image/jpeg,image/png,image/webp" required>
        <div class="preview" id="preview-source" aria-live="polite"></div>
      </div>
      <div class="drop" id="drop-target">
        <label for="target">Target photo or video</label>
        <input id="target" name="target" type="file" accept="image/jpeg,image/png,image/webp,video/mp4,video/x-matroska" required>
        <div class="preview" id="preview-target" aria-live="polite"></div>
      </div>
    </div>
    <button id="swap" type="submit">Swap</button>
  </form>
  <div id="status" role="status" aria-live="polite"></div>
  <progress id="progress" max="1" value="0" hidden aria-label="Progress"></progress>
  <section id="result" hidden aria-label="Result">
    <h2>Result</h2>
    <div id="result-media"></div>
    <p><a id="download" href="#" download>Download the result</a></p>
  </section>
</main>
<script>
const MESSAGES = {
  no_face_in_source: "No face was found in the source photo: choose a photo where the face is clearly visible.",
  payload_too_large: "That file is too big.",
  image_too_large: "That image has too many pixels.",
  unsupported_media_type: "That file type is not supported: use a JPEG, PNG or WebP photo (or an MP4 video).",
  corrupt_image: "That image file is damaged and cannot be read.",
  service_not_ready: "The face-swap service is not ready yet; please try again in a minute.",
  overloaded: "The face-swap service is busy right now; please try again in a few seconds.",
  deadline_exceeded: "That took too long and was stopped: try a smaller image or one with fewer faces.",
  gateway_unreachable: "The face-swap service cannot be reached right now; please try again later.",
  gateway_error: "The face-swap service failed; please try again.",
  missing_file: "Choose both a source photo and a target.",
  rate_limited: "You have sent too many requests in the last minute; please wait a minute and try again.",
  length_required: "The upload was refused (no length was sent); please try again.",
  bad_upload: "The upload did not complete; please try again.",
  upload_not_found: "The uploaded video is no longer here; please try again.",
  storage_full: "The face-swap service has no room for new videos right now; please try again later.",
  media_url_not_allowed: "The face-swap service is not set up to read videos from this site (its media URL prefixes).",
  input_fetch_failed: "The face-swap service could not fetch the uploaded video; please try again.",
  input_too_large: "The video is too big for the face-swap service.",
  corrupt_video: "That video file is damaged or not a video, and cannot be read.",
  video_too_long: "That video is too long to process here: try a shorter clip.",
  video_too_many_frames: "That video has too many frames to process here: try a shorter clip.",
  video_frame_too_large: "That video's frames are too large: try a smaller resolution.",
  video_pixel_rate_too_high: "That video has too many pixels per second: try a smaller or slower clip.",
  result_upload_failed: "The video was swapped but its result could not be stored; please try again.",
  result_missing: "The video was swapped but its result did not arrive; please try again.",
};
const $ = (id) => document.getElementById(id);
function say(text, error = false) { $("status").textContent = text; $("status").className = error ? "error" : ""; }
function explain(body, status) {
  const base = MESSAGES[body.code] || body.message || ("The request failed (" + status + ").");
  return body.code === "payload_too_large" && body.message ? base + " " + body.message : base;
}
function preview(input, box) {
  const f = input.files[0]; box.textContent = "";
  if (!f) return;
  const url = URL.createObjectURL(f);
  const el = document.createElement(f.type.startsWith("video/") ? "video" : "img");
  el.src = url; if (el.tagName === "VIDEO") { el.controls = true; el.muted = true; } else { el.alt = "Preview of " + f.name; }
  box.appendChild(el);
}
for (const role of ["source", "target"]) {
  const input = $(role), drop = $("drop-" + role), box = $("preview-" + role);
  input.addEventListener("change", () => preview(input, box));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; preview(input, box); }
  });
}
function show(url, isVideo) {
  const media = $("result-media"); media.textContent = "";
  const el = document.createElement(isVideo ? "video" : "img");
  el.src = url; el.id = isVideo ? "result-video" : "result-image";
  if (isVideo) { el.controls = true; el.muted = true; el.preload = "auto"; } else el.alt = "Swapped result";
  media.appendChild(el); $("download").href = url; $("result").hidden = false;
}
async function send(method, url, body, headers = {}) {
  const r = await fetch(url, { method, body, headers });
  const j = r.status === 204 ? {} : await r.json();
  if (!r.ok) throw new Error(explain(j, r.status));
  return j;
}
// The video goes into R2 in parts (each part streamed through the Worker; R2 multipart upload).
async function upload(file) {
  const mb = (n) => (n / 1048576).toFixed(1) + " MB";
  const json = { "Content-Type": "application/json" };
  const up = await send("POST", "/api/uploads", JSON.stringify({ size: file.size }), json);
  const q = "?uploadId=" + encodeURIComponent(up.uploadId), parts = [];
  try {
    for (let n = 1; n <= up.parts; n++) {
      const part = file.slice((n - 1) * up.partBytes, n * up.partBytes);
      say("Uploading the video: " + mb((n - 1) * up.partBytes) + " of " + mb(file.size) + "...");
      parts.push(await send("PUT", "/api/uploads/" + up.id + "/parts/" + n + q, part));
      $("progress").value = Math.min(1, n * up.partBytes / file.size);
    }
    await send("POST", "/api/uploads/" + up.id + "/complete" + q, JSON.stringify({ parts }), json);
  } catch (err) {
    fetch("/api/uploads/" + up.id + q, { method: "DELETE" }).catch(() => {});
    throw err;
  }
  return up.id;
}
async function poll(path) {
  for (;;) {
    const r = await fetch(path); const j = await r.json();
    if (r.status === 429) { // over the polling limit: the job goes on; wait as told, then ask again
      say("Too many requests from this address: checking on the video again in a minute...");
      await new Promise((res) => setTimeout(res, 1000 * Number(r.headers.get("Retry-After") || 60)));
      continue;
    }
    if (!r.ok) throw new Error(explain(j, r.status));
    if (j.status === "done") return j;
    if (j.status === "failed" || j.status === "cancelled") {
      throw new Error(MESSAGES[j.error_code] || ("The video job " + j.status + ": " + (j.error || "")));
    }
    $("progress").value = j.progress || 0;
    say("Working: " + (j.done || 0) + " of " + (j.total || "?") + " frames" + (j.eta_s ? ", about " + Math.ceil(j.eta_s) + " s left" : "") + "...");
    await new Promise((res) => setTimeout(res, 1000));
  }
}
$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const source = $("source").files[0], target = $("target").files[0];
  if (!source || !target) { say(MESSAGES.missing_file, true); return; }
  const isVideo = target.type.startsWith("video/");
  $("swap").disabled = true; $("result").hidden = true; $("progress").hidden = false;
  $("progress").value = 0; if (!isVideo) $("progress").removeAttribute("value");
  try {
    const fd = new FormData(); fd.append("source", source);
    if (isVideo) {
      fd.append("upload", await upload(target));
      say("Starting the video job..."); $("progress").value = 0;
      const j = await send("POST", "/api/jobs", fd);
      const done = await poll(j.poll); show(done.result, true);
      say("Done: the swapped video is ready." + (done.warnings && done.warnings.length ? " Note: " + done.warnings.join("; ") + "." : ""));
    } else {
      say("Swapping faces...");
      fd.append("target", target);
      const j = await send("POST", "/api/swap", fd);
      show(j.result, false);
      say(j.facesDetected === 0 ? "No face was found in the target: it is shown unchanged." :
          "Done: " + j.facesSwapped + " face(s) swapped." + (j.standInModels.length ? " (Stand-in models: not a real swap.)" : ""));
    }
  } catch (err) { say(err.message, true); }
  finally { $("swap").disabled = false; $("progress").hidden = true; }
});
</script>
</body>
</html>`;
