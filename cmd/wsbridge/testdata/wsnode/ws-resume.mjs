// examples/php/lib/wsbridge.js, the kit's browser helper, run in node over the ws package as the
// WebSocket (cmd/wsbridge/history_test.go). It prints one JSON line per sync notice and per
// message and exits once it has seen the given number of messages.
// Usage: node ws-resume.mjs ws://host:port/ws COUNT
import { WebSocket } from 'ws';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

globalThis.WebSocket = WebSocket;
const here = dirname(fileURLToPath(import.meta.url));
await import(join(here, '..', '..', '..', '..', 'examples', 'php', 'lib', 'wsbridge.js'));

const [url, count] = process.argv.slice(2).map((a, i) => (i === 0 ? a.replace(/^http/, "ws") : a));
const out = (o) => console.log(JSON.stringify(o));
const timer = setTimeout(() => { out({ kind: 'timeout' }); process.exit(2); }, 30000);
let n = 0;
const conn = globalThis.WsBridge.connect(url, {
  retry: 100,
  onSync: (m) => out({ kind: 'sync', data: JSON.stringify(m) }),
  onReload: (lost, error) => out({ kind: 'reload', data: JSON.stringify({ lost, error }) }),
  onMessage: (data, channel) => {
    out({ kind: 'message', data, channel });
    if (++n === Number(count)) {
      conn.close();
      clearTimeout(timer);
    }
  },
});
