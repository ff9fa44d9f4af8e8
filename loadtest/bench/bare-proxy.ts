// A pass-through HTTP proxy and nothing else (no JSON-RPC, no authorize, no metering), as
// `npm run bench:mcp-proxy -- --bare` runs it in place of the metering proxy: what Node's HTTP
// server and client cost per call on this machine, the floor under the metering proxy's figures.
//   npx tsx loadtest/bench/bare-proxy.ts <upstream url> <port>
import { Agent, createServer, request } from 'node:http';

const [upstreamUrl, port] = process.argv.slice(2);
const upstream = new URL(upstreamUrl);
const agent = new Agent({ keepAlive: true, maxSockets: 512 });
createServer((req, res) => {
  const out = request({ hostname: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: { ...req.headers, host: upstream.host }, agent }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  out.on('error', () => res.destroy());
  req.pipe(out);
}).listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
