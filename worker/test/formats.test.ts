// The Worker's format table (src/formats.ts) against the same files as the gateway's
// (tests/fixtures/formats/, checked by tests/unit/test_formats.py): every file is named alike, or
// refused alike, by both.
import { describe, expect, inject, it } from "vitest";
import { FORMATS, HEAD, sniff } from "../src/formats";

declare module "vitest" {
  export interface ProvidedContext {
    /** File name -> its bytes, base64 (vitest.config.ts). */
    formatFixtures: Record<string, string>;
  }
}

const files = inject("formatFixtures");
const bytes = (name: string) => Uint8Array.from(atob(files[name]), (c) => c.charCodeAt(0));
const expected = JSON.parse(new TextDecoder().decode(bytes("expected.json"))) as
  Record<string, { kind: string; name: string; mime: string } | null>;
const names = Object.keys(files).filter((n) => n !== "expected.json").sort();

describe("sniff, as media/formats.py", () => {
  it("every fixture file has an expectation", () => {
    expect(names).toEqual(Object.keys(expected).sort());
  });
  it.each(names)("%s", (name) => {
    const f = sniff(bytes(name));
    expect(f && { kind: f.kind, name: f.name, mime: f.mime }).toEqual(expected[name]);
  });
  it("every signature ends within the head", () => {
    for (const f of FORMATS) for (const m of f.magic) for (const [at, sig] of Object.entries(m)) {
      expect(Number(at) + sig.length).toBeLessThanOrEqual(HEAD);
    }
  });
});
