/** The web page: choose or drop a source photo and a target photo or video, swap, see the result.
 * A video goes straight into R2 in 10 MiB parts through /api/uploads (progress shown), then
 * POST /api/jobs names it; the page polls the job and links the result in R2.
 * Live: a camera (and resolution) and a source photo; Start opens /api/stream (the Worker relays
 * it to the gateway's /v1/stream), sends the camera's frames as JPEG (at most 2 unanswered, at
 * most the stream's max_fps) and draws the swapped frames with fps, latency and drops; Stop
 * ends it; a sentence for each failure.
 * Every result (image, video, live frames) is labelled "AI-generated" beside it, whatever marks the
 * file carries.
 * Check a file: choose or drop an image or video (or press "Check it" under a result); it is sent
 * as the raw body of POST /api/verify and the answer is said in plain words (made by this service
 * and when; the AI-made marks found; or none), with the full JSON in a <details>.
 * (A template literal: no backticks or dollar-braces in it.) */
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
  .result-figure { margin: 0; }
  .result-figure figcaption { margin-top: .5rem; color: #4a5368; }
  .ai-label { display: inline-block; background: #1d2330; color: #fff; font-weight: 700; padding: .15rem .55rem;
              border-radius: 6px; letter-spacing: .02em; }
  #live { background: #fff; border-radius: 12px; padding: 1rem; margin-top: 2rem; }
  #live h2 { margin-top: 0; }
  .live-controls { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .75rem 1rem; align-items: start; }
  .live-controls > div { display: flex; flex-direction: column; gap: .3rem; min-width: 0; }
  select { font-size: 1rem; padding: .4rem; border-radius: 6px; border: 1px solid #8a94a8; background: #fff; max-width: 100%; }
  select:focus-visible { outline: 3px solid #2f6fed; outline-offset: 2px; }
  .live-buttons { display: flex; gap: 1rem; flex-wrap: wrap; }
  .live-buttons button { margin: .75rem 0; }
  #live-stop { background: #5b6478; }
  #live-stop:disabled, #live-start:disabled { background: #9aa7c2; cursor: default; }
  .live-view { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  .live-view figure { margin: 0; min-width: 0; }
  .live-view video, .live-view canvas { display: block; width: 100%; height: auto; background: #1d2330; border-radius: 8px; }
  .live-view figcaption { font-size: .9rem; color: #4a5368; margin-top: .25rem; }
  .live-stats { display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; margin: .75rem 0 0; font-variant-numeric: tabular-nums; }
  .live-stats div { display: flex; gap: .4rem; }
  .live-stats div[hidden] { display: none; }
  .live-stats dt { color: #4a5368; }
  .live-stats dd { margin: 0; font-weight: 600; }
  #live-status { min-height: 1.5rem; margin-top: .5rem; }
  #live-status.error { color: #b00020; font-weight: 600; }
  @media (max-width: 640px) { .live-controls, .live-view { grid-template-columns: 1fr; } }
  #check { background: #fff; border-radius: 12px; padding: 1rem; margin-top: 2rem; }
  #check h2 { margin-top: 0; }
  #check .drop { min-height: 0; }
  #check .drop img, #check .drop video { max-height: 10rem; align-self: flex-start; }
  #check-status { min-height: 1.5rem; }
  #check-status.error { color: #b00020; font-weight: 600; }
  #check-answer { border-left: 6px solid #8a94a8; padding: .25rem 0 .25rem 1rem; }
  #check-answer[hidden] { display: none; }
  #check-answer.ours { border-color: #2f6fed; }
  #check-answer.marked { border-color: #c77700; }
  #check-answer.none { border-color: #2e7d32; }
  #check-headline { font-size: 1.15rem; font-weight: 600; margin: .25rem 0; }
  #check-lead { margin: .5rem 0 0; }
  #check-lead[hidden], #check-marks[hidden], #check-note[hidden] { display: none; }
  #check-note { color: #4a5368; margin: .25rem 0 .5rem; }
  #check-marks { margin: .25rem 0 .5rem; padding-left: 1.25rem; }
  #check-details pre { white-space: pre-wrap; word-break: break-all; font-size: .8rem; background: #f4f6fa;
                       padding: .5rem; border-radius: 6px; max-height: 24rem; overflow: auto; }
  button.secondary { background: #5b6478; font-size: 1rem; padding: .45rem 1.2rem; margin: 0 0 0 1rem; }
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
    <figure class="result-figure">
      <div id="result-media"></div>
      <figcaption><span id="result-label" class="ai-label">AI-generated</span>
        faces in this result were replaced by a face-swap model; the file also carries C2PA, XMP and a watermark
        saying so.</figcaption>
    </figure>
    <p><a id="download" href="#" download>Download the result</a>
      <button id="check-result" type="button" class="secondary">Check it for AI-made marks</button></p>
  </section>
  <section id="check" aria-labelledby="check-title">
    <h2 id="check-title">Check a file</h2>
    <p>Is a photo or video marked as made by AI? Choose or drop an image (JPEG, PNG, WebP) or an MP4
      video: the check reads its C2PA manifest, its XMP label and the invisible watermark, and says
      whether this service made it.</p>
    <form id="check-form">
      <div class="drop" id="drop-check">
        <label for="check-file">Image or video to check</label>
        <input id="check-file" type="file" accept="image/jpeg,image/png,image/webp,video/mp4,video/quicktime">
        <div class="preview" id="preview-check" aria-live="polite"></div>
      </div>
      <button id="check-button" type="submit">Check</button>
    </form>
    <div id="check-status" role="status" aria-live="polite"></div>
    <div id="check-answer" hidden>
      <p id="check-headline"></p>
      <p id="check-lead">AI-made marks found:</p>
      <ul id="check-marks"></ul>
      <p id="check-note"></p>
      <details id="check-details"><summary>The full answer (JSON)</summary><pre id="check-json"></pre></details>
    </div>
  </section>
  <section id="live" aria-labelledby="live-title">
    <h2 id="live-title">Live</h2>
    <p>Swap the face in your camera live: choose a camera, a resolution and a source photo, then Start.</p>
    <div class="live-controls">
      <div>
        <label for="live-camera">Camera</label>
        <select id="live-camera"><option value="">Default camera</option></select>
      </div>
      <div>
        <label for="live-resolution">Resolution</label>
        <select id="live-resolution">
          <option value="640x480" selected>640 &times; 480</option>
          <option value="1280x720">1280 &times; 720</option>
        </select>
      </div>
      <div>
        <label for="live-source">Source photo (if none is chosen here, the one in the form above is used)</label>
        <input id="live-source" type="file" accept="image/jpeg,image/png,image/webp">
      </div>
    </div>
    <div class="live-buttons">
      <button id="live-start" type="button">Start</button>
      <button id="live-stop" type="button" disabled>Stop</button>
    </div>
    <div class="live-view">
      <figure>
        <video id="live-video" muted playsinline aria-label="Your camera"></video>
        <figcaption>Camera</figcaption>
      </figure>
      <figure>
        <canvas id="live-output" width="640" height="480" role="img" aria-label="The swapped camera stream"></canvas>
        <figcaption>Swapped <span id="live-label" class="ai-label">AI-generated</span></figcaption>
      </figure>
    </div>
    <dl class="live-stats" aria-label="Live stream figures">
      <div><dt>Frames</dt><dd id="live-frames">0</dd></div>
      <div><dt>Delivered</dt><dd><span id="live-fps">-</span> fps</dd></div>
      <div><dt>Latency (service)</dt><dd><span id="live-latency">-</span> ms</dd></div>
      <div><dt>Round trip</dt><dd><span id="live-rtt">-</span> ms</dd></div>
      <div><dt>Dropped</dt><dd id="live-dropped">0</dd></div>
      <div id="live-failed-row" hidden><dt>Failed</dt><dd id="live-failed">0</dd></div>
      <div><dt>Frame size</dt><dd id="live-size">-</dd></div>
    </dl>
    <div id="live-status" role="status" aria-live="polite"></div>
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
  quota_exceeded: "You have used today's swaps from your address; the quota starts again at midnight UTC.",
  content_refused: "This target was refused: the service does not swap faces into intimate imagery.",
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
for (const [id, role] of [["source", "source"], ["target", "target"], ["check-file", "check"]]) {
  const input = $(id), drop = $("drop-" + role), box = $("preview-" + role);
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
  if (isVideo) { el.controls = true; el.muted = true; el.preload = "auto"; } else el.alt = "Swapped result (AI-generated)";
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

// ---- Check a file: POST /api/verify (the Worker streams it through R2 to the gateway's /v1/verify) ----
const CHECK = {
  unsupported_media_type: "That file cannot be checked: use a JPEG, PNG or WebP image or an MP4 video.",
  payload_too_large: "That file is too big to check here.",
  empty_file: "That file is empty: there is nothing to check.",
  rate_limited: "You have checked too many files in the last minute; please wait a minute and try again.",
  gateway_unreachable: "The checking service cannot be reached right now; please try again later.",
  gateway_error: "The checking service failed; please try again.",
  service_not_ready: "The checking service is not ready yet; please try again in a minute.",
  overloaded: "The checking service is busy right now; please try again in a few seconds.",
  deadline_exceeded: "Checking that file took too long and was stopped: try a shorter video.",
  incomplete_body: "The file did not arrive whole; please try again.",
  length_required: "The file was sent without its length; please try again.",
  no_file: "Choose (or drop) an image or video to check.",
  offline: "The check could not be sent: is this computer online?",
};
// When an answer has no code of ours (a proxy's page): by its status.
const CHECK_STATUS = { 413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited",
  502: "gateway_unreachable", 503: "service_not_ready", 504: "deadline_exceeded" };
const KINDS = { image: "an image", video: "a video", batch: "an image of a batch", stream: "a live-stream frame" };
function checkSay(text, error = false) { $("check-status").textContent = text; $("check-status").className = error ? "error" : ""; }
const saysAI = (t) => /Synthetic|AlgorithmicMedia|algorithmicallyEnhanced|dataDrivenMedia/.test(t || "");
// The JSON of /v1/verify in plain words: a headline, one line per mark.
function verdict(r) {
  const c = r.c2pa || {}, x = r.xmp || {}, wm = r.watermark || {}, res = r.result || {};
  const marks = [];
  const c2paAI = (c.actions || []).some((a) => saysAI(a.digitalSourceType));
  if (c.present) {
    const who = c.signer && (c.signer.common_name || c.signer.issuer);
    const dev = /DEVELOPMENT/.test(((c.signer || {}).common_name || "") + ((c.signer || {}).issuer || ""));
    const signer = who ? " (signer \u201c" + who + "\u201d: " + (c.trusted ? "a trusted certificate" : dev
      ? "an untrusted development certificate" : "a certificate not on the trust list") + ")" : "";
    marks.push("C2PA manifest " + (c.valid ? "valid" : "INVALID: the file was changed after it was signed") + signer
      + (c.valid && !c2paAI ? "; it does not say AI-made" : "")
      + (!c.valid && c.failures && c.failures.length ? " [" + c.failures.join(", ") + "]" : ""));
  }
  if (x.ai_generated) marks.push("XMP says AI-generated");
  if (wm.found) {
    const p = wm.payload || {};
    marks.push("Watermark found (confidence " + (wm.confidence || 0).toFixed(2)
      + (res.ours ? "" : ", from another service: id " + p.service_id) + ")");
  }
  const id = (wm.payload && wm.payload.result_id) ?? (c.result && c.result.result_id);
  let headline, tone, note = "";
  if (res.ours && res.known) {
    const when = new Date(res.created_at * 1000).toLocaleString(undefined, { dateStyle: "long", timeStyle: "short" });
    headline = "Made by this service on " + when + " (result " + id + ")" + (KINDS[res.kind] ? ", as " + KINDS[res.kind] : "") + ".";
    tone = "ours";
  } else if (res.ours) {
    headline = "Made by this service (result " + id + ").";
    note = "When it was made is no longer remembered (results are remembered for a limited time).";
    tone = "ours";
  } else if (r.ai_generated || x.ai_generated || wm.found || (c.present && (c2paAI || !c.valid))) {
    headline = "AI-made marks found.";
    tone = "marked";
  } else {
    headline = "No AI-made marks found.";
    note = "A file without marks may still be AI-made: marks can be stripped, and cropping or a screenshot can remove the watermark.";
    tone = "none";
  }
  return { headline, tone, marks, note };
}
function showVerdict(r) {
  const v = verdict(r), list = $("check-marks");
  $("check-headline").textContent = v.headline;
  $("check-note").textContent = v.note; $("check-note").hidden = !v.note;
  $("check-lead").hidden = list.hidden = !v.marks.length;
  list.textContent = "";
  for (const m of v.marks) { const li = document.createElement("li"); li.textContent = m; list.appendChild(li); }
  $("check-json").textContent = JSON.stringify(r, null, 2);
  $("check-answer").className = v.tone; $("check-answer").hidden = false;
}
async function checkFile(file, label) {
  if (!file) { checkSay(CHECK.no_file, true); return; }
  label = label || file.name;
  $("check-button").disabled = true; $("check-answer").hidden = true;
  checkSay("Checking " + label + "...");
  try {
    // The file itself is the body (streamed by the Worker, never held); its name only in a header.
    const r = await fetch("/api/verify", { method: "POST", body: file,
      headers: { "X-File-Name": encodeURIComponent(file.name || "file") } });
    let j = {};
    try { j = await r.json(); } catch { j = {}; }
    if (!r.ok) {
      const code = j.code || CHECK_STATUS[r.status];
      let text = CHECK[code] || j.message || ("The check failed (" + r.status + ").");
      if (code === "payload_too_large" && j.message) text += " " + j.message;
      checkSay(text, true);
      return;
    }
    showVerdict(j);
    checkSay("Checked " + label + ".");
  } catch { checkSay(CHECK.offline, true); }
  finally { $("check-button").disabled = false; }
}
$("check-form").addEventListener("submit", (e) => { e.preventDefault(); checkFile($("check-file").files[0]); });
// The result just made, checked as it is stored (fetched back from R2).
$("check-result").addEventListener("click", async () => {
  const url = $("download").getAttribute("href");
  $("check").scrollIntoView({ block: "start" });
  checkSay("Fetching the result...");
  try {
    const r = await fetch(url);
    if (!r.ok) { checkSay("The result is no longer stored (results expire after a day).", true); return; }
    const blob = await r.blob();
    await checkFile(new File([blob], "faceswap-" + url.split("/").pop(), { type: blob.type }), "the result above");
  } catch { checkSay(CHECK.offline, true); }
});

// ---- Live: the camera through /api/stream (relayed by the Worker to the gateway's /v1/stream) ----
const LIVE = {
  no_camera: "No camera was found: connect a camera (or let this browser see it) and press Start again.",
  permission: "The camera permission was refused: allow this page to use the camera (in the address bar's site settings) and press Start again.",
  camera_busy: "The camera cannot be started: another application may be using it.",
  camera_gone: "The chosen camera is no longer available: choose another one.",
  insecure: "This browser offers no camera here: cameras need a secure page (HTTPS, or localhost).",
  no_source: "Choose a source photo (here, or in the form above) before starting.",
  bad_source: "The source photo cannot be read: choose a JPEG, PNG or WebP photo.",
  service_down: "The live service cannot be reached right now; please try again later.",
  no_face_in_source: "No face was found in the source photo: choose a photo where the face is clearly visible.",
  overloaded: "The live service is busy right now (too many streams); please try again in a minute.",
  rate_limited: "You have started too many live streams in the last minute; please wait a minute and try again.",
  quota_exceeded: "You have used today's swaps and streams from your address; the quota starts again at midnight UTC.",
  frame_too_large: "The camera frames are too large for the live service: choose a lower resolution.",
  idle_timeout: "The stream stopped because no frame arrived for a while (is the camera still on?).",
  face_not_found: "The chosen face is no longer registered with the service.",
  unsupported_media_type: "The source photo is not a supported file: use a JPEG, PNG or WebP photo.",
  signature: "The live service refused this site's signature (a configuration problem of this site).",
  internal_error: "The live service failed; please try again.",
};
// Codes the Worker or the gateway send, and close codes alone, as one of the sentences above.
const LIVE_ALIASES = { gateway_unreachable: "service_down", gateway_error: "service_down", gateway_timeout: "service_down",
  gateway_closed: "service_down", triton_unavailable: "service_down", missing_signature: "signature",
  bad_signature: "signature", stale_signature: "signature", replayed_signature: "signature", forbidden: "signature" };
const LIVE_CLOSE = { 1001: "service_down", 1006: "service_down", 1009: "frame_too_large", 1011: "service_down",
  4401: "signature", 4403: "signature", 4404: "face_not_found", 4408: "idle_timeout", 4413: "frame_too_large",
  4415: "unsupported_media_type", 4422: "no_face_in_source", 4429: "rate_limited", 4500: "internal_error",
  4502: "service_down", 4503: "overloaded", 4504: "service_down" };
const live = { ws: null, stream: null, timer: 0, capture: document.createElement("canvas") };
function liveSay(text, error = false) { $("live-status").textContent = text; $("live-status").className = error ? "error" : ""; }
function liveExplain(closeCode, reason) {
  const code = live.errorCode ? (LIVE_ALIASES[live.errorCode] || live.errorCode) : null;
  if (code && LIVE[code]) return LIVE[code];
  if (code && live.errorMessage) return "The live stream stopped: " + live.errorMessage;
  const byClose = LIVE_CLOSE[closeCode];
  if (byClose) return LIVE[byClose];
  return "The live stream ended unexpectedly (code " + closeCode + (reason ? ": " + reason : "") + ").";
}
function cameraError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") return LIVE.permission;
  if (name === "NotFoundError" || name === "DevicesNotFoundError") return LIVE.no_camera;
  if (name === "OverconstrainedError") return LIVE.camera_gone;
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") return LIVE.camera_busy;
  return "The camera cannot be started (" + ((err && err.message) || err) + ").";
}
async function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  let cams = [];
  try { cams = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput"); } catch { return; }
  const sel = $("live-camera"), keep = sel.value;
  sel.textContent = "";
  if (!cams.length) { sel.appendChild(new Option("No camera found", "")); return; }
  cams.forEach((d, i) => sel.appendChild(new Option(d.label || ("Camera " + (i + 1)), d.deviceId)));
  if (cams.some((d) => d.deviceId === keep)) sel.value = keep;
}
// The source photo as base64 JPEG, scaled down so that the first message stays well under the
// 1 MiB a message may have (a face needs far fewer pixels than a camera photo has).
async function sourceBase64(file) {
  const bmp = await createImageBitmap(file);
  let scale = Math.min(1, 1280 / Math.max(bmp.width, bmp.height)), b64 = "";
  for (let i = 0; i < 4; i++, scale *= 0.7) {
    const c = document.createElement("canvas");
    c.width = Math.max(1, Math.round(bmp.width * scale)); c.height = Math.max(1, Math.round(bmp.height * scale));
    c.getContext("2d").drawImage(bmp, 0, 0, c.width, c.height);
    const blob = await new Promise((ok) => c.toBlob(ok, "image/jpeg", 0.92));
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let bin = "";
    for (let j = 0; j < bytes.length; j += 32768) bin += String.fromCharCode.apply(null, bytes.subarray(j, j + 32768));
    b64 = btoa(bin);
    if (b64.length < 700000) break;
  }
  bmp.close();
  return b64;
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : null; };
function liveShowStats() {
  const now = performance.now(), t = live.times;
  while (t.length > 1 && now - t[0] > 3000) t.shift();
  const fps = t.length > 1 ? (t.length - 1) / ((t[t.length - 1] - t[0]) / 1000) : null;
  $("live-frames").textContent = String(live.frames);
  $("live-fps").textContent = fps === null ? "-" : fps.toFixed(1);
  const lat = median(live.latencies), rtt = median(live.rtts);
  $("live-latency").textContent = lat === null ? "-" : String(Math.round(lat));
  $("live-rtt").textContent = rtt === null ? "-" : String(Math.round(rtt));
  $("live-dropped").textContent = String(live.dropped);
  $("live-failed").textContent = String(live.frameErrors);
  $("live-failed-row").hidden = !live.frameErrors;
}
// While a stream runs its settings are fixed; the keyboard focus follows the button that can act.
function liveRunning(on, focused) {
  for (const id of ["live-camera", "live-resolution", "live-source"]) $(id).disabled = on;
  $("live-start").disabled = on; $("live-stop").disabled = !on;
  if (focused) $(on ? "live-stop" : "live-start").focus();
}
// Send the camera's current picture when the stream may take one: at most 2 frames unanswered
// (the service keeps only the newest anyway) and at most max_fps a second.
function liveTick() {
  const ws = live.ws;
  if (!ws || ws.readyState !== 1 || !live.ready || live.stopping || live.encoding) return;
  const now = performance.now();
  // A frame the service dropped (a newer one won, or it was full) is never answered: after 5 s
  // without any answer, the unanswered ones no longer count.
  if (live.sent - 1 > live.answered && now - live.lastAnswer > 5000) { live.answered = live.sent - 1; live.lastAnswer = now; }
  if (live.sent - 1 - live.answered >= 2 || now - live.lastSent < 1000 / live.maxFps) return;
  const v = $("live-video");
  if (v.readyState < 2 || !v.videoWidth) return;
  const c = live.capture;
  if (c.width !== v.videoWidth || c.height !== v.videoHeight) { c.width = v.videoWidth; c.height = v.videoHeight; }
  c.getContext("2d").drawImage(v, 0, 0, c.width, c.height);
  $("live-size").textContent = c.width + " x " + c.height;
  live.encoding = true;
  live.lastSent = now;
  c.toBlob(async (blob) => {
    try {
      if (!blob || live.ws !== ws || ws.readyState !== 1 || live.stopping) return;
      if (blob.size > live.maxBytes) { live.quality = Math.max(0.3, live.quality - 0.1); return; }
      const buf = await blob.arrayBuffer();
      if (live.ws !== ws || ws.readyState !== 1 || live.stopping) return;
      if (live.sent - 1 === live.answered) live.lastAnswer = performance.now();
      live.sentAt.set(live.sent, performance.now());
      live.sent++;
      ws.send(buf);
    } finally { live.encoding = false; }
  }, "image/jpeg", live.quality);
}
function liveMessage(ws, e) {
  if (typeof e.data === "string") {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    if (m.type === "ready") {
      live.ready = true;
      live.maxFps = Math.min(Number(m.max_fps) || 30, 30);
      live.maxBytes = Number(m.max_frame_bytes) || live.maxBytes;
      liveSay("Live: swapping your camera." + (m.stand_in_models && m.stand_in_models.length ? " (Stand-in models: not a real swap.)" : ""));
    } else if (m.type === "frame") {
      live.meta = m;
    } else if (m.type === "frame_error") {
      live.answered = Math.max(live.answered, m.seq); live.lastAnswer = performance.now(); live.frameErrors++;
      liveShowStats();
    } else if (m.type === "error") {
      live.errorCode = m.code; live.errorMessage = m.message;
    } else if (m.type === "end") {
      live.end = m;
    }
    return;
  }
  const m = live.meta;
  live.meta = null;
  if (!m) return;
  const now = performance.now();
  live.answered = Math.max(live.answered, m.seq);
  live.lastAnswer = now;
  const sentAt = live.sentAt.get(m.seq);
  for (const k of [...live.sentAt.keys()]) if (k <= m.seq) live.sentAt.delete(k);
  live.frames++;
  live.times.push(now);
  live.latencies.push(m.latency_ms); if (live.latencies.length > 30) live.latencies.shift();
  if (sentAt !== undefined) { live.rtts.push(now - sentAt); if (live.rtts.length > 30) live.rtts.shift(); }
  live.dropped = m.dropped;
  live.facesSwapped = (m.faces || []).filter((f) => f.swapped).length;
  const seq = m.seq;
  createImageBitmap(new Blob([e.data], { type: "image/" + (m.format || "jpeg") })).then((bmp) => {
    if (seq < live.drawn) { bmp.close(); return; } // an older frame decoded late
    live.drawn = seq;
    const out = $("live-output");
    if (out.width !== bmp.width || out.height !== bmp.height) { out.width = bmp.width; out.height = bmp.height; }
    out.getContext("2d").drawImage(bmp, 0, 0);
    bmp.close();
  }).catch(() => {});
  liveShowStats();
  liveTick();
}
function liveEnded(ws, e) {
  if (live.ws !== ws) return;
  clearInterval(live.timer); clearTimeout(live.stopTimer);
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null; live.ws = null;
  $("live-video").srcObject = null;
  liveRunning(false, document.activeElement === $("live-stop") || document.activeElement === document.body);
  liveShowStats();
  if (live.stopping && !live.opened) { liveSay("Stopped."); return; }
  if (!live.opened) { liveSay(LIVE.service_down, true); return; }
  if (e.code === 1000 && !live.errorCode) {
    const end = live.end;
    liveSay((live.stopping ? "Stopped: " : "The live service ended the stream: ") + live.frames + " swapped frames"
      + (end ? ", " + end.dropped + " of " + end.received + " frames dropped by the service (the newest frame wins)" : "") + ".");
    return;
  }
  liveSay(liveExplain(e.code, e.reason), true);
}
async function liveStart() {
  if (live.ws) return;
  const file = $("live-source").files[0] || $("source").files[0];
  if (!file) { liveSay(LIVE.no_source, true); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { liveSay(LIVE.insecure, true); return; }
  const focused = document.activeElement === $("live-start");
  const failed = (text) => { liveSay(text, true); $("live-start").disabled = false; if (focused) $("live-start").focus(); };
  $("live-start").disabled = true;
  liveSay("Starting the camera...");
  let source;
  try { source = await sourceBase64(file); } catch { failed(LIVE.bad_source); return; }
  const [w, h] = $("live-resolution").value.split("x").map(Number), cam = $("live-camera").value;
  const video = { width: { ideal: w }, height: { ideal: h } };
  if (cam) video.deviceId = { exact: cam };
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: false, video }); }
  catch (err) { failed(cameraError(err)); return; }
  listCameras(); // with the permission given, the cameras have names
  live.stream = stream;
  const v = $("live-video");
  v.srcObject = stream;
  v.play().catch(() => {});
  Object.assign(live, { ready: false, opened: false, stopping: false, encoding: false, sent: 0, answered: -1, drawn: -1,
    lastSent: 0, lastAnswer: performance.now(), sentAt: new Map(), meta: null, frames: 0, frameErrors: 0, dropped: 0,
    times: [], latencies: [], rtts: [], errorCode: null, errorMessage: null, end: null, maxFps: 30, maxBytes: 1048576,
    quality: 0.8 });
  liveShowStats();
  liveSay("Connecting to the live service...");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/stream");
  ws.binaryType = "arraybuffer";
  live.ws = ws;
  ws.onopen = () => {
    live.opened = true;
    ws.send(JSON.stringify({ source, selection: "largest", max_fps: 30, output_format: "jpeg", quality: 80, smoothing: true }));
  };
  ws.onmessage = (e) => liveMessage(ws, e);
  ws.onclose = (e) => liveEnded(ws, e);
  live.timer = setInterval(liveTick, 15);
  liveRunning(true, focused);
}
function liveStop() {
  const ws = live.ws;
  if (!ws) return;
  if (live.stopping) { ws.close(1000, "stopped"); return; } // pressed again: end at once
  live.stopping = true;
  liveSay("Stopping: the frames in work are finished (press Stop again to end at once)...");
  if (ws.readyState === 1) ws.send(JSON.stringify({ type: "stop" })); else ws.close();
  live.stopTimer = setTimeout(() => { if (live.ws === ws) ws.close(1000, "stopped"); }, 5000);
}
$("live-start").addEventListener("click", liveStart);
$("live-stop").addEventListener("click", liveStop);
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) navigator.mediaDevices.addEventListener("devicechange", listCameras);
listCameras();
</script>
</body>
</html>`;
