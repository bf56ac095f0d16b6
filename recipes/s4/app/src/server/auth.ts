// Optional HTTP basic auth for the UI and API: on when UI_USERNAME and UI_PASSWORD are both set.
// The health endpoint stays open so probes (podman HEALTHCHECK, Quadlet, Kubernetes) need no secret.
import * as crypto from "node:crypto";
import type * as http from "node:http";

export const OPEN_PATHS = new Set(["/api/disclaimer"]);

export interface UiAuth {
  username: string;
  password: string;
}

/** The configured credentials, null when auth is off; throws when only one of the two is set. */
export function authFromEnv(env: NodeJS.ProcessEnv = process.env): UiAuth | null {
  const username = env.UI_USERNAME || "";
  const password = env.UI_PASSWORD || "";
  if (!username && !password) return null;
  if (!username || !password) {
    throw new Error("UI_USERNAME and UI_PASSWORD must be set together (or neither, for no UI login)");
  }
  return { username, password };
}

// Compares digests, so neither the length nor the content of a guess leaks through timing.
function same(a: string, b: string): boolean {
  const da = crypto.createHash("sha256").update(a).digest();
  const db = crypto.createHash("sha256").update(b).digest();
  return crypto.timingSafeEqual(da, db);
}

/** True when the request may go on; otherwise answers 401 with a Basic challenge. */
export function authorize(auth: UiAuth | null, urlPath: string, req: http.IncomingMessage,
                          res: http.ServerResponse): boolean {
  if (auth === null || OPEN_PATHS.has(urlPath)) return true;
  const header = req.headers.authorization || "";
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (m) {
    const decoded = Buffer.from(m[1], "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon >= 0 && same(decoded.slice(0, colon), auth.username) && same(decoded.slice(colon + 1), auth.password)) {
      return true;
    }
  }
  const body = JSON.stringify({ status: "error", error: "authentication required" });
  res.writeHead(401, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    "WWW-Authenticate": 'Basic realm="S4", charset="UTF-8"',
  });
  res.end(body);
  return false;
}
