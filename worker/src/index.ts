import { type AppEnv, errorResponse } from "./env";
import { handleCreateJob, handleGetJob, handleResult, handleSwap } from "./handlers";
import { type Budget, dailyQuota, rateLimit } from "./limits";
import { handleMedia } from "./media";
import { PAGE } from "./page";
import { purge } from "./storage";
import { handleStream } from "./stream";
import { handleAbortUpload, handleCompleteUpload, handleCreateUpload, handleUploadPart } from "./uploads";
import { handleVerify } from "./verify";

/** A route; `budget` names the per-client rate limit it counts against (src/limits.ts). */
type Route = {
  method: string; pattern: RegExp; budget?: Budget;
  run: (req: Request, env: AppEnv, m: RegExpMatchArray) => Promise<Response>;
};

const ROUTES: Route[] = [
  { method: "GET", pattern: /^\/$/, run: async () => new Response(PAGE, { headers: { "Content-Type": "text/html; charset=utf-8" } }) },
  { method: "POST", pattern: /^\/api\/swap$/, budget: "submit", run: (req, env) => handleSwap(req, env) },
  { method: "POST", pattern: /^\/api\/jobs$/, budget: "submit", run: (req, env) => handleCreateJob(req, env) },
  { method: "GET", pattern: /^\/api\/jobs\/([^/]+)$/, budget: "read", run: (_req, env, m) => handleGetJob(m[1], env) },
  { method: "GET", pattern: /^\/api\/results\/([^/]+)$/, budget: "read", run: (req, env, m) => handleResult(req, m[1], env) },
  { method: "POST", pattern: /^\/api\/uploads$/, budget: "upload", run: (req, env) => handleCreateUpload(req, env) },
  { method: "PUT", pattern: /^\/api\/uploads\/([^/]+)\/parts\/(\d+)$/, budget: "upload",
    run: (req, env, m) => handleUploadPart(req, env, m[1], m[2]) },
  { method: "POST", pattern: /^\/api\/uploads\/([^/]+)\/complete$/, budget: "upload",
    run: (req, env, m) => handleCompleteUpload(req, env, m[1]) },
  { method: "DELETE", pattern: /^\/api\/uploads\/([^/]+)$/, budget: "upload", run: (req, env, m) => handleAbortUpload(req, env, m[1]) },
  // A file checked for AI-made marks by the gateway's /v1/verify (src/verify.ts).
  { method: "POST", pattern: /^\/api\/verify$/, budget: "verify", run: (req, env) => handleVerify(req, env) },
  // The live WebSocket, relayed to the gateway (src/stream.ts); it counts the "stream" budget
  // itself, once it knows the request is an upgrade, and says so on the socket.
  { method: "GET", pattern: /^\/api\/stream$/, run: (req, env) => handleStream(req, env) },
  // Signed (src/media.ts): the gateway reads uploads and writes results here; no client budget.
  { method: "GET", pattern: /^\/api\/media\/(.+)$/, run: (req, env, m) => handleMedia(req, env, m[1]) },
  { method: "PUT", pattern: /^\/api\/media\/(.+)$/, run: (req, env, m) => handleMedia(req, env, m[1]) },
];

export default {
  async fetch(request: Request, env: AppEnv): Promise<Response> {
    const path = new URL(request.url).pathname;
    const matching = ROUTES.filter((r) => r.pattern.test(path));
    if (!matching.length) return errorResponse(404, "not_found", `No such page: ${path}`);
    const route = matching.find((r) => r.method === request.method || (request.method === "HEAD" && r.method === "GET"));
    if (!route) {
      const allow = [...new Set(matching.map((r) => r.method))].join(", ");
      return errorResponse(405, "method_not_allowed", `${request.method} is not allowed here; use ${allow}.`, { Allow: allow });
    }
    if (route.budget) {
      // Before the body is read: a client over its limit costs neither R2 nor the gateway.
      const refused = await rateLimit(request, env, route.budget)
        ?? (route.budget === "submit" ? await dailyQuota(request, env) : null);
      if (refused) return refused;
    }
    return route.run(request, env, path.match(route.pattern)!);
  },

  async scheduled(_controller: ScheduledController, env: AppEnv): Promise<void> {
    await purge(env);
  },
} satisfies ExportedHandler<AppEnv>;
