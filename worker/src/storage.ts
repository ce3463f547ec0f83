import type { AppEnv } from "./env";

/**
 * R2 keys are made here, never from user input:
 * - `uploads/<uuid>`: a video (or zip of images) the browser uploaded in parts, read by the
 *   gateway through a signed URL; deleted when its job ends (or the job is refused).
 * - `results/<uuid>.<ext>`: a swapped photo, or a job's result written by the gateway through a
 *   signed URL; expires after RESULT_TTL_S.
 * - `jobs/<gateway job id>`: an empty object whose custom metadata names the job's upload and
 *   result keys (the Worker keeps no other state).
 * - `verify/<uuid>`: a file sent to POST /api/verify, held only while the gateway checks it
 *   (deleted as soon as it has answered; it expires after VERIFY_HOLD_S otherwise).
 */
export function newKey(prefix: "uploads" | "results" | "verify", ext?: string): string {
  return `${prefix}/${crypto.randomUUID()}${ext ? "." + ext : ""}`;
}

/** Delete objects that nothing needs any more. A failure is logged, never raised: the caller
 * has its answer already, and the hourly purge removes what is left. */
export async function deleteUploads(env: AppEnv, keys: string[]): Promise<void> {
  if (!keys.length) return;
  try {
    await env.FILES.delete(keys);
  } catch (err) {
    console.error("could not delete uploads (the hourly purge will)", keys, err);
  }
}

/** R2 put options of a result: its content type and its expiry time (Unix ms) in custom metadata. */
export function resultMetadata(env: AppEnv, contentType: string): R2PutOptions {
  const expiresAt = Date.now() + Number(env.RESULT_TTL_S) * 1000;
  return { httpMetadata: { contentType }, customMetadata: { expiresAt: String(expiresAt) } };
}

export function expired(obj: { customMetadata?: Record<string, string> }): boolean {
  const at = Number(obj.customMetadata?.expiresAt ?? "0");
  return at > 0 && at < Date.now();
}

/** Delete expired results, files held for /api/verify and past days' quota counts, and uploads
 * and job records older than RESULT_TTL_S (the cron handler). Uploads are deleted as soon as their job ends
 * (handlers.ts), verify files as soon as the gateway has answered (verify.ts); this is the
 * backstop for uploads never used, jobs nobody polled to the end and a check cut off midway.
 * Incomplete multipart uploads are not listed by R2: R2 aborts them after 7 days (or sooner
 * with a lifecycle rule). */
export async function purge(env: AppEnv): Promise<number> {
  let removed = 0;
  const cutoff = Date.now() - Number(env.RESULT_TTL_S) * 1000;
  for (const prefix of ["results/", "uploads/", "jobs/", "verify/", "quota/"]) {
    let cursor: string | undefined;
    do {
      const page = await env.FILES.list({ prefix, cursor, include: ["customMetadata"] });
      const stale = page.objects.filter((o) => expired(o) || o.uploaded.getTime() < cutoff).map((o) => o.key);
      if (stale.length) await env.FILES.delete(stale);
      removed += stale.length;
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor);
  }
  return removed;
}
