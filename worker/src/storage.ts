import type { AppEnv } from "./env";

/** Keys are made here, never from user input: uploads/<uuid>/<role>, results/<uuid>.<ext>. */
export function newKey(prefix: "uploads" | "results", ext?: string): string {
  return `${prefix}/${crypto.randomUUID()}${ext ? "." + ext : ""}`;
}

export async function putUpload(env: AppEnv, role: string, data: Uint8Array, contentType: string): Promise<string> {
  const key = `${newKey("uploads")}/${role}`;
  await env.FILES.put(key, data, { httpMetadata: { contentType } });
  return key;
}

/** Delete uploads that nothing needs any more. A failure is logged, never raised: the caller
 * has its answer already, and the hourly purge removes what is left. */
export async function deleteUploads(env: AppEnv, keys: string[]): Promise<void> {
  if (!keys.length) return;
  try {
    await env.FILES.delete(keys);
  } catch (err) {
    console.error("could not delete uploads (the hourly purge will)", keys, err);
  }
}

/** Store a result with its expiry time (Unix ms) in custom metadata. */
export async function putResult(env: AppEnv, key: string, data: ArrayBuffer | Uint8Array, contentType: string) {
  const expiresAt = Date.now() + Number(env.RESULT_TTL_S) * 1000;
  await env.FILES.put(key, data, { httpMetadata: { contentType }, customMetadata: { expiresAt: String(expiresAt) } });
}

export function expired(obj: { customMetadata?: Record<string, string> }): boolean {
  const at = Number(obj.customMetadata?.expiresAt ?? "0");
  return at > 0 && at < Date.now();
}

/** Delete expired results and uploads older than the TTL (the cron handler). Uploads are
 * deleted as soon as the gateway has answered (handlers.ts); this is the backstop for those a
 * crashed or cancelled request left behind. */
export async function purge(env: AppEnv): Promise<number> {
  let removed = 0;
  const cutoff = Date.now() - Number(env.RESULT_TTL_S) * 1000;
  for (const prefix of ["results/", "uploads/"]) {
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
