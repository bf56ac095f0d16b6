// S4 example backend: plain node:http, no runtime dependencies.
//   GET /api/disclaimer -> {"disclaimer": "...", "status": "ok"}   (health check)
//   GET /api/buckets    -> {"buckets": [...]} from the local RADOS Gateway
//   GET /, /app.js ...  -> the webpack bundle (the frontend)
// With UI_USERNAME and UI_PASSWORD set, everything but /api/disclaimer needs HTTP basic auth.
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { authFromEnv, authorize } from "./auth";
import { configFromEnv, listBuckets } from "./s3";

const HOST = process.env.IP || "0.0.0.0";
const PORT = Number(process.env.PORT || 5000);
// The image: backend/dist/server.js next to frontend/dist; a local build: dist/server -> dist/public.
function publicDir(): string {
  if (process.env.S4_FRONTEND_DIR) return path.resolve(process.env.S4_FRONTEND_DIR);
  const image = path.resolve(__dirname, "..", "..", "frontend", "dist");
  return fs.existsSync(image) ? image : path.resolve(__dirname, "..", "public");
}
const PUBLIC_DIR = publicDir();
const AUTH = (() => {
  try {
    return authFromEnv();
  } catch (e) {
    console.error(`s4 app: ${(e as Error).message}`);
    process.exit(2);
  }
})();

const DISCLAIMER =
  "S4 is a demo S3-compatible storage (Ceph RADOS Gateway with the SQLite DBStore backend). " +
  "It is not meant for production data.";

const MIME: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
};

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) });
  res.end(data);
}

function serveStatic(urlPath: string, res: http.ServerResponse): void {
  let rel: string;
  try {
    rel = decodeURIComponent(urlPath);
  } catch {
    return sendJson(res, 400, { status: "error", error: "bad path" });
  }
  if (rel === "/" || rel === "") rel = "/index.html";
  const file = path.resolve(PUBLIC_DIR, "." + path.posix.normalize(rel));
  if (file !== PUBLIC_DIR && !file.startsWith(PUBLIC_DIR + path.sep)) {
    return sendJson(res, 403, { status: "error", error: "forbidden" });
  }
  fs.stat(file, (err, st) => {
    if (err || !st.isFile()) return sendJson(res, 404, { status: "error", error: "not found" });
    res.writeHead(200, {
      "Content-Type": MIME[path.extname(file)] || "application/octet-stream",
      "Content-Length": st.size,
    });
    fs.createReadStream(file).pipe(res);
  });
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const urlPath = (req.url || "/").split("?")[0];
  if (req.method !== "GET" && req.method !== "HEAD") {
    return sendJson(res, 405, { status: "error", error: "method not allowed" });
  }
  if (!authorize(AUTH, urlPath, req, res)) return;
  if (urlPath === "/api/disclaimer") {
    return sendJson(res, 200, { disclaimer: DISCLAIMER, status: "ok" });
  }
  if (urlPath === "/api/buckets") {
    try {
      const buckets = await listBuckets(configFromEnv());
      return sendJson(res, 200, { buckets });
    } catch (e) {
      return sendJson(res, 502, { status: "error", error: (e as Error).message });
    }
  }
  if (urlPath.startsWith("/api/")) return sendJson(res, 404, { status: "error", error: "not found" });
  return serveStatic(urlPath, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (!res.headersSent) sendJson(res, 500, { status: "error", error: String(e) });
    else res.destroy();
  });
});

server.listen(PORT, HOST, () => {
  console.log(`s4 app listening on http://${HOST}:${PORT} (S3 endpoint ${configFromEnv().endpoint}, ` +
              `UI login ${AUTH ? "on" : "off"}, frontend ${PUBLIC_DIR})`);
});

function shutdown(signal: string): void {
  console.log(`received ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
