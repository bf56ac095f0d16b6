// Tiny S3 client: just ListBuckets, signed with our own SigV4.
import * as http from "node:http";
import * as https from "node:https";
import { Credentials, signRequest } from "./sigv4";

export interface S3Config extends Credentials {
  endpoint: string;
  timeoutMs: number;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): S3Config {
  return {
    endpoint: env.AWS_S3_ENDPOINT || "http://127.0.0.1:7480",
    accessKeyId: env.AWS_ACCESS_KEY_ID || "",
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY || "",
    region: env.AWS_DEFAULT_REGION || "us-east-1",
    timeoutMs: Number(env.S3_TIMEOUT_MS || 10000),
  };
}

function request(cfg: S3Config, method: string, path: string): Promise<{ status: number; body: string }> {
  const url = new URL(path, cfg.endpoint);
  const headers = signRequest({ method, url }, cfg);
  const lib = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method, headers, timeout: cfg.timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`S3 request timed out after ${cfg.timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

const decodeXml = (s: string): string =>
  s
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, "&");

export async function listBuckets(cfg: S3Config): Promise<string[]> {
  const res = await request(cfg, "GET", "/");
  if (res.status !== 200) {
    const code = /<Code>([^<]*)<\/Code>/.exec(res.body)?.[1] ?? "";
    throw new Error(`ListBuckets failed: HTTP ${res.status} ${code}`.trim());
  }
  const names: string[] = [];
  const re = /<Bucket>[\s\S]*?<Name>([^<]*)<\/Name>[\s\S]*?<\/Bucket>/g;
  for (let m = re.exec(res.body); m; m = re.exec(res.body)) names.push(decodeXml(m[1]));
  return names;
}
