// The page's Live section end to end: Chromium with a fake camera that plays a clip made here
// from a shared video (y4m), through the Worker's /api/stream (wrangler dev --local), the
// gateway's /v1/stream and Triton (tiny stand-ins). Checks that swapped frames arrive and are
// drawn with fps and latency shown, that they differ from the camera's frames around the face
// only, that Stop ends the stream on the gateway, and the sentences for a source without a face,
// no camera, a refused permission and the service down. Screenshot: out/worker_e2e_live.png.
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { BROWSER_ARGS, CHROMIUM, GATEWAY_URL, PY, ROOT, SHARED, startStack, stopGateway, stopStack, TMP,
  WORKER_URL } from "./stack.mjs";

const CLIP = join(TMP, "camera.y4m");
const FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  `--use-file-for-fake-video-capture=${CLIP}`];

/** The shared 384x384 clip (2 s, 24 fps, one face, zooming and panning) as raw YUV 4:2:0 in a
 * y4m file, which Chromium's fake camera plays in a loop. */
function makeClip() {
  const script = `
import av, sys
with av.open(sys.argv[1]) as c, open(sys.argv[2], "wb") as out:
    s = c.streams.video[0]
    r = s.average_rate
    w, h = s.codec_context.width, s.codec_context.height
    out.write(f"YUV4MPEG2 W{w} H{h} F{r.numerator}:{r.denominator} Ip A1:1 C420jpeg\\n".encode())
    for f in c.decode(s):
        out.write(b"FRAME\\n" + f.reformat(format="yuv420p").to_ndarray().tobytes())
`;
  const r = spawnSync(PY, ["-c", script, join(SHARED, "video_astronaut_zoompan_384.mp4"), CLIP], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
}

before(async () => {
  await startStack();
  makeClip();
});
after(stopStack);

async function metric(name) {
  const text = await (await fetch(`${GATEWAY_URL}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, "m"));
  return m ? Number(m[1]) : null;
}

const statusOf = (page) => page.textContent("#live-status");

test("live: the fake camera's frames come back swapped through Worker, gateway and Triton; Stop ends the stream", { timeout: 240_000 }, async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BROWSER_ARGS, ...FAKE_CAMERA] });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 1500 } });
    // What goes over the page's socket: the camera frames sent, the answers received.
    const sent = [], received = [], log = [];
    page.on("websocket", (ws) => {
      if (!ws.url().endsWith("/api/stream")) return;
      ws.on("framesent", (f) => { sent.push(f.payload); log.push(["sent", f.payload]); });
      ws.on("framereceived", (f) => { received.push(f.payload); log.push(["received", f.payload]); });
    });
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#live-source", join(SHARED, "portrait_astronaut_eileen_collins.png"));
    await page.focus("#live-start");
    await page.keyboard.press("Enter"); // keyboard-operable
    await page.waitForFunction(() => Number(document.getElementById("live-frames").textContent) >= 8, null,
      { timeout: 120_000 });
    assert.match(await statusOf(page), /^Live: swapping your camera\. \(Stand-in models: not a real swap\.\)$/);
    const fps = Number(await page.textContent("#live-fps"));
    const latency = Number(await page.textContent("#live-latency"));
    const rtt = Number(await page.textContent("#live-rtt"));
    console.log("live figures", JSON.stringify({ fps, latency, rtt }));
    assert.ok(fps > 0 && latency > 0 && rtt >= latency, JSON.stringify({ fps, latency, rtt }));
    assert.equal(await page.textContent("#live-size"), "384 x 384");
    assert.equal(await page.isVisible("#live-failed-row"), false); // shown only when a frame failed
    assert.equal(await metric("gateway_streams"), 1);
    // With the permission given, the camera list names the camera (the fake one is named after its file).
    const cameras = await page.$$eval("#live-camera option", (os) => os.map((o) => o.textContent));
    assert.deepEqual(cameras, [CLIP]);
    // Never more than 2 frames unanswered when the page sent one: it does not flood the socket.
    let count = 0, answered = -1, most = 0;
    for (const [dir, p] of log) {
      if (dir === "sent" && typeof p !== "string") { count++; most = Math.max(most, count - 1 - answered); }
      if (dir === "received" && typeof p === "string") {
        const m = JSON.parse(p);
        if (m.type === "frame" || m.type === "frame_error") answered = Math.max(answered, m.seq);
      }
    }
    assert.ok(count >= 8 && most <= 2, JSON.stringify({ count, most }));

    // Pair camera frames with their swapped answers (seq = the frame's index among those sent).
    const frames = sent.filter((p) => typeof p !== "string");
    const pairs = [];
    for (let i = 0; i < received.length - 1; i++) {
      if (typeof received[i] !== "string") continue;
      const meta = JSON.parse(received[i]);
      if (meta.type !== "frame" || typeof received[i + 1] === "string") continue;
      const boxes = meta.faces.filter((f) => f.swapped).map((f) => f.box);
      if (boxes.length) pairs.push({ camera: frames[meta.seq].toString("base64"), swapped: received[i + 1].toString("base64"), boxes });
    }
    assert.ok(pairs.length >= 3, `only ${pairs.length} frames with a swapped face`);
    const diffs = await page.evaluate(async (pairs) => {
      const pixels = async (b64) => {
        const bmp = await createImageBitmap(new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: "image/jpeg" }));
        const c = document.createElement("canvas"); c.width = bmp.width; c.height = bmp.height;
        const g = c.getContext("2d"); g.drawImage(bmp, 0, 0);
        return { w: bmp.width, h: bmp.height, d: g.getImageData(0, 0, bmp.width, bmp.height).data };
      };
      const out = [];
      for (const p of pairs.slice(-3)) {
        const a = await pixels(p.camera), b = await pixels(p.swapped);
        let inSum = 0, inN = 0, outSum = 0, outN = 0;
        for (let y = 0; y < a.h; y++) for (let x = 0; x < a.w; x++) {
          const i = 4 * (y * a.w + x);
          const d = (Math.abs(a.d[i] - b.d[i]) + Math.abs(a.d[i + 1] - b.d[i + 1]) + Math.abs(a.d[i + 2] - b.d[i + 2])) / 3;
          const near = (m) => p.boxes.some(([x1, y1, x2, y2]) => { const mw = (x2 - x1) * m, mh = (y2 - y1) * m;
            return x >= x1 - mw && x <= x2 + mw && y >= y1 - mh && y <= y2 + mh; });
          if (near(0)) { inSum += d; inN++; } else if (!near(0.5)) { outSum += d; outN++; }
        }
        out.push({ size: [a.w, a.h, b.w, b.h], inside: inSum / inN, outside: outSum / outN });
      }
      return out;
    }, pairs);
    console.log("camera vs swapped, mean absolute difference per pixel:", JSON.stringify(diffs));
    for (const d of diffs) {
      assert.deepEqual(d.size, [384, 384, 384, 384], JSON.stringify(d));
      assert.ok(d.inside > 8 && d.inside > 4 * d.outside && d.outside < 4, `not swapped around the face only: ${JSON.stringify(diffs)}`);
    }
    // The swapped stream is drawn: the canvas has the frame's size and a picture in it.
    const drawn = await page.evaluate(() => {
      const c = document.getElementById("live-output"), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let sum = 0, sq = 0;
      for (let i = 0; i < d.length; i += 4) { sum += d[i + 1]; sq += d[i + 1] * d[i + 1]; }
      const n = d.length / 4, mean = sum / n;
      return { w: c.width, h: c.height, std: Math.sqrt(sq / n - mean * mean) };
    });
    assert.deepEqual([drawn.w, drawn.h], [384, 384]);
    assert.ok(drawn.std > 20, `the canvas looks empty: ${JSON.stringify(drawn)}`);
    mkdirSync(join(ROOT, "out"), { recursive: true });
    await page.screenshot({ path: join(ROOT, "out", "worker_e2e_live.png"), fullPage: true });

    // Keyboard: the focus moved to Stop when the stream started; Enter stops it.
    assert.equal(await page.evaluate(() => document.activeElement.id), "live-stop");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => /^Stopped: \d+ swapped frames/.test(document.getElementById("live-status").textContent),
      null, { timeout: 30_000 });
    assert.match(await statusOf(page), /^Stopped: \d+ swapped frames, \d+ of \d+ frames dropped by the service/);
    assert.equal(await page.getAttribute("#live-start", "disabled"), null);
    assert.equal(await page.evaluate(() => document.activeElement.id), "live-start");
    assert.equal(await page.evaluate(() => document.getElementById("live-video").srcObject), null); // camera off
    const end = Date.now() + 15_000;
    while (Date.now() < end && (await metric("gateway_streams")) !== 0) await new Promise((r) => setTimeout(r, 200));
    assert.equal(await metric("gateway_streams"), 0, "the gateway still runs the stream after Stop");
  } finally {
    await browser.close();
  }
});

test("live: closing the tab mid-stream ends the gateway's stream", { timeout: 120_000 }, async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BROWSER_ARGS, ...FAKE_CAMERA] });
  try {
    const page = await browser.newPage();
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#live-source", join(SHARED, "portrait_astronaut_eileen_collins.png"));
    await page.click("#live-start");
    await page.waitForFunction(() => Number(document.getElementById("live-frames").textContent) >= 2, null, { timeout: 60_000 });
    assert.equal(await metric("gateway_streams"), 1);
    await page.close(); // no stop message: the browser just goes (1001), the Worker closes the gateway's side
    const end = Date.now() + 15_000;
    while (Date.now() < end && (await metric("gateway_streams")) !== 0) await new Promise((r) => setTimeout(r, 200));
    assert.equal(await metric("gateway_streams"), 0, "the gateway still runs the stream of a closed tab");
  } finally {
    await browser.close();
  }
});

test("live: a source photo without a face gets the no-face sentence (narrow screen)", { timeout: 120_000 }, async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BROWSER_ARGS, ...FAKE_CAMERA] });
  try {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#live-source", join(SHARED, "noface_cat_chelsea.png"));
    await page.click("#live-start");
    await page.waitForSelector("#live-status.error", { timeout: 60_000 });
    assert.match(await statusOf(page), /^No face was found in the source photo/);
    assert.equal(await page.getAttribute("#live-start", "disabled"), null);
    // Nothing wider than the screen.
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
    await page.locator("#live").screenshot({ path: join(ROOT, "out", "worker_e2e_live_narrow.png") });
  } finally {
    await browser.close();
  }
});

test("live: no camera, a refused permission and no source photo each get their sentence", { timeout: 120_000 }, async () => {
  const cases = [
    // No camera at all (no fake device): getUserMedia finds none.
    { args: [], source: true, want: /^No camera was found/ },
    // A camera, but the permission prompt is refused (headless dismisses it).
    { args: ["--use-fake-device-for-media-stream"], source: true, want: /^The camera permission was refused/ },
    { args: FAKE_CAMERA, source: false, want: /^Choose a source photo/ },
  ];
  for (const c of cases) {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BROWSER_ARGS, ...c.args] });
    try {
      const page = await browser.newPage();
      await page.goto(`${WORKER_URL}/`);
      if (c.source) await page.setInputFiles("#source", join(SHARED, "portrait_astronaut_eileen_collins.png")); // the form's photo is reused
      await page.click("#live-start");
      await page.waitForSelector("#live-status.error", { timeout: 30_000 });
      assert.match(await statusOf(page), c.want);
    } finally {
      await browser.close();
    }
  }
});

// Last: it stops the gateway.
test("live: the service down behind the Worker gets the service-down sentence", { timeout: 120_000 }, async () => {
  stopGateway();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BROWSER_ARGS, ...FAKE_CAMERA] });
  try {
    const page = await browser.newPage();
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#live-source", join(SHARED, "portrait_astronaut_eileen_collins.png"));
    const closed = page.waitForEvent("websocket").then((ws) => new Promise((ok) => ws.on("close", ok)));
    await page.click("#live-start");
    await page.waitForSelector("#live-status.error", { timeout: 60_000 });
    assert.match(await statusOf(page), /^The live service cannot be reached right now/);
    await closed;
  } finally {
    await browser.close();
  }
});
