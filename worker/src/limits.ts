import { type AppEnv, errorResponse } from "./env";

/**
 * Per-client request limits, with Cloudflare's rate-limiting binding (wrangler.jsonc "ratelimits").
 *
 * Five budgets, keyed by the client's IP:
 * - "submit" (POST /api/swap and POST /api/jobs together, one budget): 10 a minute. Each one
 *   occupies the gateway's GPU pipeline; a person trying photos by hand rarely swaps more than a
 *   few times a minute, so 10 leaves room for retries while one client cannot keep the gateway
 *   busy for everyone else (its admission control sheds load globally, not per client).
 * - "read" (GET /api/jobs/:id and GET /api/results/:name): 120 a minute. The page polls a job
 *   once a second (60 a minute for as long as a video runs) and then loads the result; 120 is
 *   that plus room for a second tab or a few downloads, and still stops a scraper hammering
 *   the gateway's job status or R2 reads.
 * - "upload" (everything under /api/uploads: create, each part, complete, abort): 60 a minute.
 *   A video of the largest size (200 MB) is 20 parts of 10 MiB plus create and complete, 22
 *   requests; 60 lets a client upload two of those a minute, with retries, and bounds what one
 *   address can write into R2 to about 600 MB a minute.
 * - "stream" (opening GET /api/stream, the live WebSocket): 10 a minute. A stream holds a
 *   gateway stream slot and takes an admission slot per frame for as long as it runs; a person
 *   starts one, maybe restarts it with another camera, resolution or photo: 10 leaves room for
 *   that and for reconnects, while one address cannot churn streams. Counted when the upgrade
 *   is asked for (not per frame: the gateway paces frames and drops the stale ones); a refused
 *   one is told so on the socket (close 4429), as browsers cannot read a refused upgrade's status.
 * - "verify" (POST /api/verify, a file checked for AI-made marks): 20 a minute. Each check
 *   writes the file into R2 and back out and takes one of the gateway's admission slots (a
 *   video's frames are decoded); a person checks a handful of files by hand, a newsroom's batch
 *   should use the gateway's API directly; 20 leaves room for that handful with retries while
 *   one address cannot turn the Worker into a free bulk scanner (up to 2 GB a minute).
 * GET / (the static page) and 404/405 answers are not limited: they touch neither R2 nor the
 * gateway. Nor are the signed /api/media URLs (src/media.ts): only the gateway holds them, for
 * jobs that already counted against their client's "submit" budget.
 *
 * Beside them, a **daily quota** per client (``DAILY_QUOTA`` in wrangler.jsonc, 200; "0" turns it
 * off): swaps, video jobs and live streams opened together, per UTC day (``overDailyQuota``).
 * The per-minute limits stop bursts; the quota stops one address from using the service all day
 * (a swap costs GPU time that the operator pays for). 200 is far above what a person trying
 * photos and clips by hand does in a day. Over it: 429 ``quota_exceeded`` with Retry-After set
 * to the seconds until the next UTC midnight (a live stream: closed with 4429 and that code).
 * The count lives in R2 (``quota/<day>/<SHA-256 of the client key>``: no address is stored),
 * updated with an ETag compare-and-swap, so it is exact per object except for two requests of
 * one client racing on its first count of a day; the cron deletes past days' counts.
 *
 * The binding counts per Cloudflare location and is eventually consistent, so the limits are
 * approximate in production (exact under `wrangler dev --local` and vitest, which simulate it in
 * memory with fixed windows). Clients behind one address (an office, carrier-grade NAT) share a
 * budget; raise the limits in wrangler.jsonc if that bites.
 */
export type Budget = "submit" | "read" | "upload" | "stream" | "verify";

/** The period configured for every binding in wrangler.jsonc (the binding allows 10 or 60 s). */
export const RATE_PERIOD_S = 60;

/** Cloudflare sets CF-Connecting-IP on every request (a client cannot forge it there); locally
 * (wrangler dev without it, tests) all requests share one key. */
export function clientKey(request: Request): string {
  return request.headers.get("CF-Connecting-IP") || "local";
}

/** null when the request may go on; else the 429 answer. A failing limiter lets the request
 * through (and logs): the limits guard against abuse, they must not take the service down. */
export async function rateLimit(request: Request, env: AppEnv, budget: Budget): Promise<Response | null> {
  const message = await overLimit(request, env, budget);
  return message === null ? null
    : errorResponse(429, "rate_limited", message, { "Retry-After": String(RATE_PERIOD_S) });
}

/** null when the request may go on; else the sentence saying why not (the caller answers it). */
export async function overLimit(request: Request, env: AppEnv, budget: Budget): Promise<string | null> {
  const limiter = { submit: env.SUBMIT_LIMITER, read: env.READ_LIMITER, upload: env.UPLOAD_LIMITER,
    stream: env.STREAM_LIMITER, verify: env.VERIFY_LIMITER }[budget];
  try {
    const { success } = await limiter.limit({ key: clientKey(request) });
    if (success) return null;
  } catch (err) {
    console.error(`rate limiter ${budget} failed; letting the request through`, err);
    return null;
  }
  const what = { submit: "swaps or video jobs", read: "requests", upload: "upload requests",
    stream: "live streams opened", verify: "files checked" }[budget];
  return `Too many ${what} from your address in the last minute; try again in ${RATE_PERIOD_S} seconds.`;
}

/** Seconds until the next UTC midnight (when the daily quota starts again), at least 1. */
export function secondsToMidnight(now = Date.now()): number {
  const day = 86_400_000;
  return Math.max(1, Math.ceil((day - (now % day)) / 1000));
}

async function quotaKey(request: Request, now: number): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(clientKey(request)));
  const hash = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `quota/${new Date(now).toISOString().slice(0, 10)}/${hash}`;
}

/** Counts one more swap, video job or live stream for the request's client today; null when it
 * is within ``DAILY_QUOTA`` (or the quota is off), else the sentence saying why not (and it is
 * not counted). A failing R2 lets the request through (and logs), as the rate limits do. */
export async function overDailyQuota(request: Request, env: AppEnv, now = Date.now()): Promise<string | null> {
  const quota = Number(env.DAILY_QUOTA ?? "0");
  if (!(quota > 0)) return null;
  try {
    const key = await quotaKey(request, now);
    const expiresAt = String(now + secondsToMidnight(now) * 1000);
    for (let attempt = 0; attempt < 4; attempt++) {
      const head = await env.FILES.head(key);
      const used = Number(head?.customMetadata?.count ?? "0");
      if (used >= quota) {
        return `Your address has used its ${quota} swaps, video jobs and live streams for today; ` +
          `the quota starts again at midnight UTC.`;
      }
      const meta = { customMetadata: { count: String(used + 1), expiresAt } };
      const put = head ? await env.FILES.put(key, "", { ...meta, onlyIf: { etagMatches: head.etag } })
        : await env.FILES.put(key, "", meta);
      if (put !== null) return null; // null: another request of this client counted first; read again
    }
  } catch (err) {
    console.error("daily quota failed; letting the request through", err);
  }
  return null;
}

/** null when the request may go on; else the 429 ``quota_exceeded`` answer (``overDailyQuota``). */
export async function dailyQuota(request: Request, env: AppEnv): Promise<Response | null> {
  const message = await overDailyQuota(request, env);
  return message === null ? null
    : errorResponse(429, "quota_exceeded", message, { "Retry-After": String(secondsToMidnight()) });
}
