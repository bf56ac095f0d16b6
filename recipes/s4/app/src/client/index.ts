// S4 frontend: shows the disclaimer and the bucket list from the backend API.

interface Disclaimer {
  disclaimer: string;
  status: string;
}
interface Buckets {
  buckets?: string[];
  error?: string;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = (await r.json()) as T;
  if (!r.ok) throw new Error((body as { error?: string }).error || `HTTP ${r.status}`);
  return body;
}

async function main(): Promise<void> {
  const root = document.getElementById("app") || document.body;
  root.textContent = "";
  root.appendChild(el("h1", "S4 — S3 storage"));

  const disclaimer = el("p", "Loading…");
  disclaimer.id = "disclaimer";
  root.appendChild(disclaimer);

  root.appendChild(el("h2", "Buckets"));
  const list = el("ul");
  list.id = "buckets";
  root.appendChild(list);

  try {
    const d = await getJson<Disclaimer>("/api/disclaimer");
    disclaimer.textContent = d.disclaimer;
  } catch (e) {
    disclaimer.textContent = `Could not load disclaimer: ${(e as Error).message}`;
  }

  try {
    const b = await getJson<Buckets>("/api/buckets");
    const names = b.buckets || [];
    if (names.length === 0) list.appendChild(el("li", "(no buckets yet)"));
    for (const n of names) list.appendChild(el("li", n));
  } catch (e) {
    list.appendChild(el("li", `Could not list buckets: ${(e as Error).message}`));
  }
}

void main();
