import { readdirSync, readFileSync } from "node:fs";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

/** The format fixtures the Python tests read too (../tests/fixtures/formats/), for
 * test/formats.test.ts: the Workers runtime has no disk, so they travel base64-encoded
 * through vitest's provide/inject. */
const FIXTURES = new URL("../tests/fixtures/formats/", import.meta.url);
const nearMisses: Record<string, string> = JSON.parse(readFileSync(new URL("near-misses.json", FIXTURES), "utf8"));
const formatFixtures = Object.fromEntries([
  ...readdirSync(FIXTURES).filter((name) => !["README.md", "near-misses.json"].includes(name))
    .map((name) => [name, readFileSync(new URL(name, FIXTURES)).toString("base64")]),
  // the shortest near misses are hex strings, not files (near-misses.json)
  ...Object.entries(nearMisses).map(([name, hex]) => [name, Buffer.from(hex, "hex").toString("base64")]),
]);

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.jsonc" },
      miniflare: { bindings: { GATEWAY_URL: "http://gateway.test", GATEWAY_SECRET: "unit-test-secret" } },
    }),
  ],
  test: { include: ["test/**/*.test.ts"], provide: { formatFixtures } },
});
