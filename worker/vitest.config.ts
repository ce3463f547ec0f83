import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.jsonc" },
      miniflare: { bindings: { GATEWAY_URL: "http://gateway.test", GATEWAY_SECRET: "unit-test-secret" } },
    }),
  ],
  test: { include: ["test/**/*.test.ts"] },
});
