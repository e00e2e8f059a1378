// A tiny upstream facilitator for the dashboard tests: it judges nothing (Gatehouse's own
// checks are what the dashboard shows) and answers in the reference facilitator's shapes.
import http from 'node:http';
import crypto from 'node:crypto';

export function startUpstream() {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      let json = {};
      try { json = JSON.parse(body || '{}'); } catch { /* answered below */ }
      const auth = json.paymentPayload?.payload?.authorization || {};
      const network = json.paymentRequirements?.network || 'eip155:84532';
      const reply = (status, obj) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(obj)); };
      if (req.url === '/verify') return reply(200, { isValid: true, payer: auth.from });
      if (req.url === '/settle') {
        return reply(200, { success: true, payer: auth.from, network, transaction: `0x${crypto.randomBytes(32).toString('hex')}` });
      }
      if (req.url === '/supported') return reply(200, { kinds: [{ x402Version: 2, scheme: 'exact', network }], extensions: [], signers: {} });
      return reply(404, { error: 'not found' });
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((r) => server.close(r)),
  })));
}
