// node's ws as an independent client of the bridge (cmd/wsbridge/rfc_test.go runs it against
// the built binary, whose app echoes every message). It prints one JSON line per check; any
// 'error' event (ws refusing a frame the bridge sent, such as a close reason that is not UTF-8)
// is reported as such. Usage: node client.mjs ws://host:port/ws LIMIT
import WebSocket from 'ws';

const [url, limitArg] = process.argv.slice(2);
const limit = Number(limitArg);

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const st = { ws, errors: [], messages: [], closed: null };
    ws.on('error', (e) => st.errors.push(String(e.code || e.message)));
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.from(data);
      if (st.messages.length === 0 && !isBinary && buf.toString().startsWith('id:')) {
        st.id = buf.toString().slice(3);
        resolve(st);
        return;
      }
      st.messages.push({ binary: isBinary, hex: buf.toString('hex') });
      st.onmessage?.();
    });
    ws.on('close', (code, reason) => {
      st.closed = { code, reason: reason.toString() };
      st.onclose?.();
    });
    ws.on('unexpected-response', (_, res) => reject(new Error('handshake answered ' + res.statusCode)));
    const t = setTimeout(() => reject(new Error('no welcome frame')), 10000);
    ws.once('message', () => clearTimeout(t));
  });
}

const nextMessage = (st) => new Promise((resolve) => {
  if (st.messages.length) return resolve(st.messages.shift());
  st.onmessage = () => { st.onmessage = null; resolve(st.messages.shift()); };
});
const closed = (st) => new Promise((resolve) => {
  if (st.closed) return resolve(st.closed);
  st.onclose = () => resolve(st.closed);
});

const t0 = Date.now();
const out = (o) => console.log(JSON.stringify({ ...o, ms: Date.now() - t0 }));
const timer = setTimeout(() => { out({ check: 'timeout' }); process.exit(2); }, 20000);

// Text and binary round trips, byte for byte.
{
  const st = await open();
  const text = 'h\u00e9llo \u{1F600} <&>';
  st.ws.send(text);
  const m1 = await nextMessage(st);
  out({ check: 'text', ok: !m1.binary && Buffer.from(m1.hex, 'hex').toString() === text });
  // Big enough to be compressed when the bridge has COMPRESSION=on (ws offers it by default).
  const big = JSON.stringify(Array.from({ length: 60 }, (_, i) => ({ user: 'u' + i, text: 'hello room' })));
  st.ws.send(big);
  const mb = await nextMessage(st);
  out({ check: 'big-text', ok: !mb.binary && Buffer.from(mb.hex, 'hex').toString() === big,
    extensions: st.ws.extensions });
  const bin = Buffer.from([0, 255, 1, 128, 0xfe]);
  st.ws.send(bin);
  const m2 = await nextMessage(st);
  out({ check: 'binary', ok: m2.binary && m2.hex === bin.toString('hex') });
  st.ws.close(1000, 'bye');
  const c = await closed(st);
  out({ check: 'client-close', code: c.code, reason: c.reason, errors: st.errors });
}
// Invalid UTF-8 in a text message: the bridge fails the connection with 1007.
{
  const st = await open();
  st.ws.send(Buffer.from([0x61, 0x62, 0xff, 0xfe, 0x63, 0x64]), { binary: false });
  const c = await closed(st);
  out({ check: 'invalid-utf8', code: c.code, reason: c.reason, errors: st.errors });
}
// A close reason that is not UTF-8: the bridge answers 1007, never echoes it.
{
  const st = await open();
  const payload = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from([0x61, 0xff])]);
  // ws refuses to send such a reason itself, so the close frame goes out raw.
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  st.ws._socket.write(Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, masked]));
  const c = await closed(st);
  out({ check: 'close-reason-not-utf8', code: c.code, reason: c.reason, errors: st.errors });
}
// One byte over the limit: 1009, whose close frame ws must accept as valid.
{
  const st = await open();
  st.ws.send(Buffer.alloc(limit + 1));
  const c = await closed(st);
  out({ check: 'too-big', code: c.code, reason: c.reason, errors: st.errors });
}
clearTimeout(timer);
