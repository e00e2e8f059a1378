// Load for tests/multi_replica.rs, run as a separate process (node 20, no dependencies).
// Reads {url, payments: [body...], settleCopies} from the file named by argv[2]; verifies
// every payment (16 at a time), then fires settleCopies concurrent settles of every payment
// at once, so duplicates race across replicas. Prints {verify: [...], settle: [[...]]}.
import { readFileSync } from "node:fs";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));

async function post(path, body) {
  try {
    const r = await fetch(input.url + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { json = { raw: text }; }
    return { status: r.status, body: json };
  } catch (e) {
    return { status: 0, body: { error: String(e) } };
  }
}

const verify = new Array(input.payments.length);
let next = 0;
await Promise.all(Array.from({ length: 16 }, async () => {
  while (next < input.payments.length) {
    const i = next++;
    verify[i] = await post("/verify", input.payments[i]);
  }
}));
const settle = await Promise.all(input.payments.map((p) =>
  Promise.all(Array.from({ length: input.settleCopies }, () => post("/settle", p)))));
process.stdout.write(JSON.stringify({ verify, settle }));
