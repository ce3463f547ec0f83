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

/** Store a result with its expiry time (Unix ms) in custom metadata. */
export async function putResult(env: AppEnv, key: string, data: ArrayBuffer | Uint8Array, contentType: string) {
  const expiresAt = Date.now() + Number(env.RESULT_TTL_S) * 1000;
  await env.FILES.put(key, data, { httpMetadata: { contentType }, customMetadata: { expiresAt: String(expiresAt) } });
}

export function expired(obj: { customMetadata?: Record<string, string> }): boolean {
  const at = Number(obj.customMetadata?.expiresAt ?? "0");
  return at > 0 && at < Date.now();
}

/** Delete expired results and uploads older than the TTL (the cron handler). */
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
