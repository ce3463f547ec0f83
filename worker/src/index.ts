import { type AppEnv, errorResponse } from "./env";
import { handleCreateJob, handleGetJob, handleResult, handleSwap } from "./handlers";
import { PAGE } from "./page";
import { purge } from "./storage";

type Route = { method: string; pattern: RegExp; run: (req: Request, env: AppEnv, m: RegExpMatchArray) => Promise<Response> };

const ROUTES: Route[] = [
  { method: "GET", pattern: /^\/$/, run: async () => new Response(PAGE, { headers: { "Content-Type": "text/html; charset=utf-8" } }) },
  { method: "POST", pattern: /^\/api\/swap$/, run: (req, env) => handleSwap(req, env) },
  { method: "POST", pattern: /^\/api\/jobs$/, run: (req, env) => handleCreateJob(req, env) },
  { method: "GET", pattern: /^\/api\/jobs\/([^/]+)$/, run: (_req, env, m) => handleGetJob(m[1], env) },
  { method: "GET", pattern: /^\/api\/results\/([^/]+)$/, run: (_req, env, m) => handleResult(m[1], env) },
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
    return route.run(request, env, path.match(route.pattern)!);
  },

  async scheduled(_controller: ScheduledController, env: AppEnv): Promise<void> {
    await purge(env);
  },
} satisfies ExportedHandler<AppEnv>;
