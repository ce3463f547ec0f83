/**
 * What a file is, judged from its first bytes: the same table as the gateway's media/formats.py
 * (kind, name, MIME type, extensions, signatures), row for row. test/formats.test.ts checks both
 * against the files in ../tests/fixtures/formats/, so that the Worker accepts and refuses what the
 * gateway does. Each caller keeps its own accepted set, by kind or name.
 */

export interface Format {
  kind: "image" | "video" | "archive";
  /** What callers call it (MP4 and QuickTime share "mp4"; only their MIME types differ). */
  name: string;
  mime: string;
  extensions: string[];
  /** Any one of these identifies the format; one matches when each `offset: bytes` does (bytes
   * written as a string of char codes 0-255). */
  magic: Record<number, string>[];
}

/** Leading bytes sniff needs: every signature ends within them. */
export const HEAD = 16;

const ISO_BOXES = ["ftyp", "moov", "mdat", "wide", "free", "skip"];

/** First match wins: QuickTime's ftyp brand before MP4's boxes. */
export const FORMATS: Format[] = [
  { kind: "image", name: "jpeg", mime: "image/jpeg", extensions: ["jpg", "jpeg"], magic: [{ 0: "\xff\xd8\xff" }] },
  { kind: "image", name: "png", mime: "image/png", extensions: ["png"], magic: [{ 0: "\x89PNG\r\n\x1a\n" }] },
  { kind: "image", name: "webp", mime: "image/webp", extensions: ["webp"], magic: [{ 0: "RIFF", 8: "WEBP" }] },
  { kind: "image", name: "bmp", mime: "image/bmp", extensions: ["bmp"], magic: [{ 0: "BM" }] },
  { kind: "image", name: "tiff", mime: "image/tiff", extensions: ["tif", "tiff"], magic: [{ 0: "II*\x00" }, { 0: "MM\x00*" }] },
  { kind: "video", name: "mp4", mime: "video/quicktime", extensions: ["mov"], magic: [{ 4: "ftyp", 8: "qt" }] },
  { kind: "video", name: "mp4", mime: "video/mp4", extensions: ["mp4", "m4v"], magic: ISO_BOXES.map((box) => ({ 4: box })) },
  { kind: "video", name: "mkv", mime: "video/x-matroska", extensions: ["mkv", "webm"], magic: [{ 0: "\x1a\x45\xdf\xa3" }] },
  { kind: "video", name: "avi", mime: "video/x-msvideo", extensions: ["avi"], magic: [{ 0: "RIFF", 8: "AVI" }] },
  { kind: "archive", name: "zip", mime: "application/zip", extensions: ["zip"], magic: [{ 0: "PK\x03\x04" }] },
  { kind: "archive", name: "empty-zip", mime: "application/zip", extensions: [], magic: [{ 0: "PK\x05\x06" }] },
  { kind: "archive", name: "gzip", mime: "application/gzip", extensions: ["gz"], magic: [{ 0: "\x1f\x8b" }] },
  { kind: "archive", name: "7z", mime: "application/x-7z-compressed", extensions: ["7z"], magic: [{ 0: "7z\xbc\xaf\x27\x1c" }] },
  { kind: "archive", name: "rar", mime: "application/vnd.rar", extensions: ["rar"], magic: [{ 0: "Rar!" }] },
  { kind: "archive", name: "bzip2", mime: "application/x-bzip2", extensions: ["bz2"], magic: [{ 0: "BZh" }] },
  { kind: "archive", name: "xz", mime: "application/x-xz", extensions: ["xz"], magic: [{ 0: "\xfd7zXZ" }] },
];

const at = (head: Uint8Array, offset: number, sig: string) =>
  [...sig].every((c, i) => offset + i < head.length && head[offset + i] === c.charCodeAt(0));

/** The format of a file from its first bytes (HEAD of them are enough), never from a name or a
 * client's content type; null when the table does not know them. */
export function sniff(head: Uint8Array): Format | null {
  return FORMATS.find((f) => f.magic.some((m) => Object.entries(m).every(([o, sig]) => at(head, Number(o), sig)))) ?? null;
}
