// Every output says it is AI-made, through the Worker too: Chromium swaps two real photos on the
// page (Worker -> gateway -> Triton, the result streamed into R2); the result the page links,
// read back from R2, is checked by the gateway's POST /v1/verify called directly (signed): C2PA
// manifest valid, XMP AI-generated, watermark found, result known to the service. Then the
// page's "Check a file" part in the browser: the result ("Made by this service on ..."), a
// re-encoded copy (watermark only), an ordinary photo ("No AI-made marks found"), and the
// sentences for an unsupported file, a file too large, too many checks and the service down.
// Screenshots: out/worker_e2e_verify.png (the result checked), out/worker_e2e_verify_narrow.png (a
// narrow screen: an ordinary photo checked, the raw JSON unfolded).
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { BROWSER_ARGS, CHROMIUM, ROOT, SHARED, startStack, stopGateway, stopStack, verifyAtGateway,
  WORKER_URL } from "./stack.mjs";

before(startStack);
after(stopStack);

const DEV_SIGNER = "faceswap DEVELOPMENT certificate \u2014 not trusted";
let result = null; // { bytes, href, id }: the swap made by the first test

/** Check the file on the page; [headline, marks lines, the JSON shown]. */
async function checkOnPage(page, file) {
  await page.setInputFiles("#check-file", file);
  const answered = page.waitForResponse((r) => r.url().endsWith("/api/verify"));
  await page.click("#check-button");
  await answered;
  await page.waitForFunction(() => document.getElementById("check-button").disabled === false);
  return readAnswer(page);
}
async function readAnswer(page) {
  return page.evaluate(() => ({
    status: document.getElementById("check-status").textContent,
    error: document.getElementById("check-status").className === "error",
    shown: !document.getElementById("check-answer").hidden,
    headline: document.getElementById("check-headline").textContent,
    lead: !document.getElementById("check-lead").hidden,
    note: document.getElementById("check-note").hidden ? "" : document.getElementById("check-note").textContent,
    marks: [...document.querySelectorAll("#check-marks li")].map((li) => li.textContent),
    json: document.getElementById("check-json").textContent,
  }));
}

test("marking survives the Worker path: the swapped photo in R2 has a valid C2PA manifest, the XMP label and the watermark; the page says it was made here", { timeout: 240_000 }, async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 1300 } });
    await page.goto(`${WORKER_URL}/`);
    await page.setInputFiles("#source", join(SHARED, "portrait_obama_official.jpg"));
    await page.setInputFiles("#target", join(SHARED, "two_obama_biden.jpg"));
    const answer = page.waitForResponse((r) => r.url().endsWith("/api/swap"));
    await page.click("#swap");
    const swap = await (await answer).json();
    assert.ok(swap.facesSwapped >= 1, JSON.stringify(swap));
    await page.waitForSelector("#result-image", { state: "visible", timeout: 120_000 });
    const href = await page.getAttribute("#download", "href");
    assert.match(href, /^\/api\/results\/[0-9a-f-]{36}\.jpg$/);

    // What R2 stores, checked by the gateway itself (not through the Worker).
    const res = await fetch(WORKER_URL + href);
    assert.equal(res.headers.get("content-type"), "image/jpeg");
    const bytes = Buffer.from(await res.arrayBuffer());
    const report = await verifyAtGateway(bytes, "result.jpg");
    assert.deepEqual(report.marks_found, ["c2pa", "xmp", "watermark"], JSON.stringify(report));
    assert.equal(report.ai_generated, true);
    assert.equal(report.c2pa.valid, true, JSON.stringify(report.c2pa));
    assert.equal(report.c2pa.trusted, false); // the development certificate: untrusted, as it should be
    assert.equal(report.c2pa.signer.common_name, DEV_SIGNER);
    // C2PA 2.2: the edit by a trained model, then the watermark (also a soft binding)
    assert.ok(report.c2pa.actions.some((a) => a.action === "c2pa.edited"
      && a.digitalSourceType === "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"),
    JSON.stringify(report.c2pa.actions));
    assert.ok(report.c2pa.actions.some((a) => a.action === "c2pa.watermarked"), JSON.stringify(report.c2pa.actions));
    assert.equal(report.watermark.matches_manifest, true, JSON.stringify(report.watermark));
    assert.equal(report.xmp.ai_generated, true);
    assert.equal(report.watermark.found, true);
    assert.ok(report.watermark.confidence >= 0.3, JSON.stringify(report.watermark)); // fresh: 0.4-0.8; found from 0.1
    assert.equal(report.result.ours, true);
    assert.equal(report.result.known, true);
    assert.equal(report.result.kind, "image");
    assert.ok(Math.abs(report.result.created_at - Date.now() / 1000) < 300, JSON.stringify(report.result));
    const id = report.watermark.payload.result_id;
    assert.equal(report.c2pa.result.result_id, id); // manifest and watermark name the same result

    // The same bytes through the Worker's /api/verify (streamed via R2, signed): the same report.
    const viaWorker = await fetch(`${WORKER_URL}/api/verify`, { method: "POST", body: bytes,
      headers: { "X-File-Name": "result.jpg" } });
    assert.equal(viaWorker.status, 200);
    assert.deepEqual(await viaWorker.json(), report);

    // The page's own check of its result (fetched back from R2, sent to /api/verify).
    const checked = page.waitForResponse((r) => r.url().endsWith("/api/verify"));
    await page.click("#check-result");
    assert.equal((await checked).status(), 200);
    await page.waitForSelector("#check-answer:not([hidden])");
    const shown = await readAnswer(page);
    assert.match(shown.headline, new RegExp(`^Made by this service on .+ \\(result ${id}\\), as an image\\.$`));
    assert.equal(shown.status, "Checked the result above.");
    assert.equal(shown.note, "");
    assert.equal(shown.lead, true);
    assert.equal(shown.marks.length, 3, JSON.stringify(shown.marks));
    assert.equal(shown.marks[0], `C2PA manifest valid (signer \u201c${DEV_SIGNER}\u201d: an untrusted development certificate)`);
    assert.equal(shown.marks[1], "XMP says AI-generated");
    assert.equal(shown.marks[2], `Watermark found (confidence ${report.watermark.confidence.toFixed(2)})`);
    assert.deepEqual(JSON.parse(shown.json).watermark, report.watermark);
    assert.equal(await page.evaluate(() => document.getElementById("check-details").open), false); // raw JSON folded
    mkdirSync(join(ROOT, "out"), { recursive: true });
    await page.screenshot({ path: join(ROOT, "out", "worker_e2e_verify.png"), fullPage: true });
    result = { bytes, href, id };
  } finally {
    await browser.close();
  }
});

test("Check a file: a re-encoded copy is still known by its watermark; an ordinary photo has no marks; a sentence for each failure", { timeout: 180_000 }, async () => {
  assert.ok(result, "needs the swap of the first test");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: BROWSER_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a narrow screen
    await page.goto(`${WORKER_URL}/`);

    // The result as the user downloaded it, chosen in the picker.
    let got = await checkOnPage(page, { name: "faceswap-result.jpg", mimeType: "image/jpeg", buffer: result.bytes });
    assert.match(got.headline, new RegExp(`^Made by this service on .+ \\(result ${result.id}\\)`));

    // Re-encoded in the browser (canvas -> JPEG quality 0.75): C2PA and XMP are gone, the
    // watermark in the pixels is not.
    const reencoded = await page.evaluate(async (href) => {
      const bmp = await createImageBitmap(await (await fetch(href)).blob());
      const c = document.createElement("canvas");
      c.width = bmp.width; c.height = bmp.height;
      c.getContext("2d").drawImage(bmp, 0, 0);
      const blob = await new Promise((ok) => c.toBlob(ok, "image/jpeg", 0.75));
      const b = new Uint8Array(await blob.arrayBuffer());
      let s = "";
      for (let i = 0; i < b.length; i += 32768) s += String.fromCharCode.apply(null, b.subarray(i, i + 32768));
      return btoa(s);
    }, result.href);
    got = await checkOnPage(page, { name: "copy.jpg", mimeType: "image/jpeg", buffer: Buffer.from(reencoded, "base64") });
    assert.match(got.headline, new RegExp(`^Made by this service on .+ \\(result ${result.id}\\), as an image\\.$`));
    assert.deepEqual(got.marks, [`Watermark found (confidence ${JSON.parse(got.json).watermark.confidence.toFixed(2)})`]);
    assert.deepEqual(JSON.parse(got.json).marks_found, ["watermark"]);

    // An ordinary photo.
    got = await checkOnPage(page, join(SHARED, "group_insightface_t1.jpg"));
    assert.equal(got.error, false);
    assert.equal(got.headline, "No AI-made marks found.");
    assert.match(got.note, /may still be AI-made/);
    assert.deepEqual([got.marks, got.lead], [[], false]);
    const plain = JSON.parse(got.json);
    assert.deepEqual([plain.marks_found, plain.ai_generated, plain.result.ours], [[], false, false]);
    assert.equal(plain.watermark.found, false);
    await page.click("#check-details summary"); // the raw JSON unfolds
    assert.equal(await page.evaluate(() => document.getElementById("check-details").open), true);
    await page.locator("#check").screenshot({ path: join(ROOT, "out", "worker_e2e_verify_narrow.png") });

    // Not an image or a video: refused by the Worker (415), said in words.
    got = await checkOnPage(page, { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("just some text\n") });
    assert.equal(got.error, true);
    assert.equal(got.shown, false);
    assert.match(got.status, /^That file cannot be checked: use a JPEG, PNG or WebP image or an MP4 video\.$/);

    // Too large and too many checks: the Worker's answers (tested in vitest), here their sentences.
    const small = { name: "a.jpg", mimeType: "image/jpeg", buffer: result.bytes };
    await page.route("**/api/verify", (route) => route.fulfill({ status: 413, contentType: "application/json",
      body: JSON.stringify({ code: "payload_too_large", message: "The file is 120 MB; the limit is 95 MB." }) }));
    got = await checkOnPage(page, small);
    assert.equal(got.status, "That file is too big to check here. The file is 120 MB; the limit is 95 MB.");
    await page.unroute("**/api/verify");
    await page.route("**/api/verify", (route) => route.fulfill({ status: 429, contentType: "application/json",
      headers: { "Retry-After": "60" }, body: JSON.stringify({ code: "rate_limited", message: "Too many files checked" }) }));
    got = await checkOnPage(page, small);
    assert.match(got.status, /^You have checked too many files in the last minute/);
    await page.unroute("**/api/verify");

    // The service down behind the Worker (the gateway stopped; Triton and the Worker stay).
    stopGateway();
    got = await checkOnPage(page, small);
    assert.equal(got.error, true);
    assert.equal(got.status, "The checking service cannot be reached right now; please try again later.");
  } finally {
    await browser.close();
  }
});
