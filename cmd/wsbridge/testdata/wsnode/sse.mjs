// The eventsource package (a WHATWG-conformant EventSource for node) as a client of the built
// binary's SSE endpoint (cmd/wsbridge/sse_test.go). It prints one JSON line per thing it saw,
// each event's data as the parser gave it to the page, and exits once the stream it was told to
// wait for has closed. Usage: node sse.mjs http://host:port/events
import { EventSource } from 'eventsource';

const [url] = process.argv.slice(2);
const out = (o) => console.log(JSON.stringify(o));
const timer = setTimeout(() => { out({ kind: 'timeout' }); process.exit(2); }, 30000);

const es = new EventSource(url);
let opens = 0;
es.onopen = () => out({ kind: 'open', n: ++opens });
es.onerror = (e) => out({ kind: 'error', readyState: es.readyState, message: e.message ?? '', code: e.code ?? 0 });
es.onmessage = (e) => out({ kind: 'message', data: e.data, lastEventId: e.lastEventId });
es.addEventListener('binary', (e) => out({ kind: 'binary', hex: Buffer.from(e.data, 'base64').toString('hex') }));
// A stream the bridge ends on purpose says so first; the page then stops the reconnecting.
es.addEventListener('close', (e) => {
  out({ kind: 'close', data: e.data });
  es.close();
  clearTimeout(timer);
});
