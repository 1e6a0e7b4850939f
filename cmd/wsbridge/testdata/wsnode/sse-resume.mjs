// The eventsource package as a client that reconnects by itself (cmd/wsbridge/history_test.go):
// it never closes the EventSource, so when the bridge ends the stream it comes back, with the
// last id it saw as Last-Event-ID, as a browser does. It prints one JSON line per sync event
// and per message, and exits once it has seen the given number of messages.
// Usage: node sse-resume.mjs http://host:port/events COUNT
import { EventSource } from 'eventsource';

const [url, count] = process.argv.slice(2);
const out = (o) => console.log(JSON.stringify(o));
const timer = setTimeout(() => { out({ kind: 'timeout' }); process.exit(2); }, 30000);

const es = new EventSource(url);
let messages = 0;
es.addEventListener('sync', (e) => out({ kind: 'sync', data: e.data, lastEventId: e.lastEventId }));
es.onmessage = (e) => {
  out({ kind: 'message', data: e.data, lastEventId: e.lastEventId });
  if (++messages === Number(count)) {
    es.close();
    clearTimeout(timer);
  }
};
