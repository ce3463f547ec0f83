// End to end in a real browser: Triton + gateway (Python, loopback) + the Worker (wrangler dev
// --local) + Debian Chromium driven by playwright-core. Uploads two real photos, waits for the
// swapped image, checks its size and that pixels changed only around the faces, saves a screenshot.
// A video job: the page uploads the video into the Worker's R2 in parts; the gateway's job reads
// it and writes its result through URLs the Worker signed (one store, as in production); the
// page shows and links the result, read from R2; that result carries the AI-made marks (C2PA,
// XMP, watermark), checked by the gateway's /v1/verify.
import { spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { BROWSER_ARGS, CHROMIUM, PY, ROOT, SECRET, SHARED, startStack, stopStack, TMP, verifyAtGateway,
  WORKER_URL } from "./stack.mjs";

/** A media URL path signed as the Worker signs them (to look at R2 from outside). */
function signedMedia(method, key) {
  const expires = Math.floor(Date.now() / 1000) + 600;
  const sig = createHmac("sha256", SECRET).update(`${method}\n/api/media/${key}\n${expires}`).digest("hex");
  return `${WORKER_URL}/api/media/${key}?expires=${expires}&signature=${sig}`;
}

before(startStack);
after(stopStack);


/** The "AI-generated" label beside the result ``media`` (an element id): shown, its text, just below it. */
async function aiLabel(page, media) {
  assert.ok(await page.isVisible("#result-label"), "the AI-generated label is not visible");
  const at = await page.evaluate((id) => {
    const l = document.getElementById("result-label").getBoundingClientRect();
    const m = document.getElementById(id).getBoundingClientRect();
    return { text: document.getElementById("result-label").textContent, gap: l.top - m.bottom, w: l.width };
  }, media);
  assert.equal(at.text, "AI-generated");
  assert.ok(at.w > 40 && at.gap >= -1 && at.gap < 80, JSON.stringify(at));
}

test("a swap in the browser: the result has the target's size and changes only around faces", async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 1300 } });
    await page.goto(`${WORKER_URL}/`);
    const target = join(SHARED, "two_obama_biden.jpg");
    await page.setInputFiles("#source", join(SHARED, "portrait_obama_official.jpg"));
    await page.setInputFiles("#target", target);
    const answer = page.waitForResponse((r) => r.url().endsWith("/api/swap"));
    await page.keyboard.press("Tab"); // keyboard reachable
    await page.click("#swap");
    const swap = await (await answer).json();
    assert.ok(swap.facesSwapped >= 1, JSON.stringify(swap));
    await page.waitForSelector("#result-image", { state: "visible", timeout: 120_000 });
    await page.waitForFunction(() => document.getElementById("result-image").complete);
    await aiLabel(page, "result-image");
    const check = await page.evaluate(async ({ faces }) => {
      const load = (src) => new Promise((ok, bad) => { const i = new Image(); i.onload = () => ok(i); i.onerror = bad; i.src = src; });
      const res = document.getElementById("result-image");
      const tgt = await load(document.querySelector("#preview-target img").src);
      const pixels = (img) => { const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext("2d"); g.drawImage(img, 0, 0); return g.getImageData(0, 0, c.width, c.height).data; };
      const a = pixels(res), b = pixels(tgt), w = res.naturalWidth, h = res.naturalHeight;
      let changed = 0, outside = 0;
      const inside = (x, y) => faces.some((f) => { const [x1, y1, x2, y2] = f.box; const mw = (x2 - x1) * 0.5, mh = (y2 - y1) * 0.5;
        return x >= x1 - mw && x <= x2 + mw && y >= y1 - mh && y <= y2 + mh; });
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        const i = 4 * (y * w + x);
        if (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]) > 60) {
          changed++; if (!inside(x, y)) outside++;
        }
      }
      return { w, h, tw: tgt.naturalWidth, th: tgt.naturalHeight, changed, outside };
    }, { faces: swap.faces.filter((f) => f.swapped) });
    assert.equal(check.w, check.tw);
    assert.equal(check.h, check.th);
    assert.ok(check.changed > 100, `too few pixels changed: ${JSON.stringify(check)}`);
    assert.ok(check.outside <= 0.001 * check.w * check.h, `pixels changed away from the faces: ${JSON.stringify(check)}`);
    assert.match(await page.textContent("#status"), /face\(s\) swapped/);
    mkdirSync(join(ROOT, "out"), { recursive: true });
    await page.screenshot({ path: join(ROOT, "out", "worker_e2e.png"), fullPage: true });
  } finally {
    await browser.close();
  }
});

test("a face-less source gets a clear sentence", async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a narrow screen
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#source", join(SHARED, "noface_cat_chelsea.png"));
    await page.setInputFiles("#target", join(SHARED, "two_obama_biden.jpg"));
    await page.click("#swap");
    await page.waitForSelector("#status.error", { timeout: 60_000 });
    assert.match(await page.textContent("#status"), /No face was found in the source photo/);
  } finally {
    await browser.close();
  }
});

/** The shared 2 s clip (384x384, 48 frames, one face) followed by a 12 MiB top-level `free` box
 * (players skip it): the same video, big enough to go up in two parts. */
function paddedClip() {
  const clip = readFileSync(join(SHARED, "video_astronaut_zoompan_384.mp4"));
  const pad = Buffer.alloc(12 * 1048576);
  pad.writeUInt32BE(pad.length, 0);
  pad.write("free", 4, "latin1");
  const path = join(TMP, "astronaut_padded.mp4");
  writeFileSync(path, Buffer.concat([clip, pad]));
  return path;
}

test("a video job in the browser: uploaded to R2 in parts, swapped by the gateway's job, result from R2", async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 1300 } });
    const parts = [];
    page.on("request", (r) => { if (r.method() === "PUT" && r.url().includes("/parts/")) parts.push(r.url()); });
    const progress = [];
    await page.exposeFunction("noteProgress", (v) => progress.push(v));
    await page.goto(`${WORKER_URL}/`);
    await page.evaluate(() => new MutationObserver(() => window.noteProgress(document.getElementById("status").textContent))
      .observe(document.getElementById("status"), { childList: true, characterData: true, subtree: true }));
    await page.setInputFiles("#source", join(SHARED, "portrait_obama_official.jpg"));
    const video = paddedClip();
    await page.setInputFiles("#target", video);
    const created = page.waitForResponse((r) => r.url().endsWith("/api/uploads") && r.request().method() === "POST");
    await page.click("#swap");
    const upload = await (await created).json();
    await page.waitForSelector("#result-video", { state: "visible", timeout: 240_000 });
    await aiLabel(page, "result-video");
    assert.match(await page.textContent("#status"), /swapped video is ready\. Note: .*stand-in models used/);
    assert.equal(parts.length, 2, `the video went up in ${parts.length} parts`);
    assert.ok(progress.some((t) => /^Uploading the video: 10\.0 MB of 12\.\d MB/.test(t)), JSON.stringify(progress));
    // The page plays the result (served from R2 with its type; Chromium may ask in ranges).
    const shown = await page.waitForFunction(() => {
      const v = document.getElementById("result-video");
      return v.readyState >= 1 && { w: v.videoWidth, h: v.videoHeight, d: v.duration };
    }, null, { timeout: 30_000 }).then((h) => h.jsonValue());
    assert.deepEqual([shown.w, shown.h], [384, 384]);
    assert.ok(Math.abs(shown.d - 2) < 0.2, `duration ${shown.d}`);
    const href = await page.getAttribute("#download", "href");
    assert.match(href, /^\/api\/results\/[0-9a-f-]{36}\.mp4$/);
    const res = await fetch(WORKER_URL + href);
    assert.equal(res.headers.get("content-type"), "video/mp4");
    assert.match(res.headers.get("content-disposition"), /^inline; filename="faceswap-[0-9a-f-]{36}\.mp4"$/);
    const out = join(TMP, "result.mp4");
    writeFileSync(out, Buffer.from(await res.arrayBuffer()));
    const probe = spawnSync(PY, ["-c", "import av,sys,json; c=av.open(sys.argv[1]); s=c.streams.video[0]; "
      + "print(json.dumps([s.codec_context.width, s.codec_context.height, sum(1 for _ in c.decode(video=0))]))", out],
    { encoding: "utf8" });
    assert.deepEqual(JSON.parse(probe.stdout), [384, 384, 48], probe.stderr);
    // What the gateway's job PUT into R2 through the Worker is what it marked.
    const marks = await verifyAtGateway(readFileSync(out), "result.mp4");
    assert.deepEqual(marks.marks_found, ["c2pa", "xmp", "watermark"], JSON.stringify(marks));
    assert.equal(marks.c2pa.valid, true, JSON.stringify(marks.c2pa));
    assert.deepEqual([marks.result.ours, marks.result.known, marks.result.kind], [true, true, "video"]);
    // The job has ended: its input is gone from R2.
    assert.equal((await fetch(signedMedia("GET", `uploads/${upload.id}`))).status, 404);
    mkdirSync(join(ROOT, "out"), { recursive: true });
    await page.screenshot({ path: join(ROOT, "out", "worker_e2e_video.png"), fullPage: true });
  } finally {
    await browser.close();
  }
});

test("a damaged video gets a clear sentence", async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#source", join(SHARED, "portrait_obama_official.jpg"));
    const clip = readFileSync(join(SHARED, "video_astronaut_zoompan_384.mp4"));
    const broken = Buffer.concat([clip.subarray(0, 64), Buffer.alloc(200_000, 0x5a)]); // an MP4 header, then junk
    await page.setInputFiles("#target", { name: "broken.mp4", mimeType: "video/mp4", buffer: broken });
    await page.click("#swap");
    await page.waitForSelector("#status.error", { timeout: 120_000 });
    assert.match(await page.textContent("#status"), /damaged or not a video/);
  } finally {
    await browser.close();
  }
});
