// Shows every notification pushed to this user, at once, over a WebSocket (/ws) or, with
// ?transport=sse, over Server-Sent Events (/events, an EventSource): the same webhooks, the same
// pushes, the same page. Reconnects with backoff.
'use strict';
const transport = new URLSearchParams(location.search).get('transport') === 'sse' ? 'sse' : 'ws';
window.notifyTransport = transport; // for the browser test
const status = document.getElementById('status');
const setStatus = (state, text, code) => {
  status.dataset.state = state;
  status.dataset.transport = transport;
  if (code !== undefined) status.dataset.code = String(code);
  status.textContent = text;
};
function show(data) {
  const m = JSON.parse(data);
  if (m.type !== 'notification') return;
  const li = document.createElement('li');
  li.className = 'notification';
  li.textContent = `${m.at} ${m.text}`;
  document.getElementById('notifications').prepend(li);
}

let retry = 0;
function connectWS() {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.onopen = () => { retry = 0; setStatus('open', 'live'); };
  ws.onmessage = (e) => show(e.data);
  ws.onclose = () => {
    setStatus('reconnecting', 'reconnecting…');
    setTimeout(connectWS, Math.min(30000, 500 * 2 ** retry++));
  };
}

function connectSSE() {
  // EventSource reconnects by itself after a dropped stream (and after wsbridge's "retry later"
  // answer); it gives up only on a refusal (401: logged out), which a reload answers.
  const es = new EventSource('/events');
  es.onopen = () => setStatus('open', 'live (SSE)');
  es.onmessage = (e) => {
    window.notifyLastEventId = e.lastEventId; // for the browser test: what a reconnect sends
    show(e.data);
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) setStatus('closed', 'disconnected: reload the page');
    else setStatus('reconnecting', 'reconnecting…');
  };
  // wsbridge ends a stream on purpose (PHP or the API closed it) with this event: stay away,
  // as the WebSocket page does for a 4000-4099 close. At shutdown it asks for a retry instead.
  es.addEventListener('close', (e) => {
    const { code, reason } = JSON.parse(e.data);
    if (code >= 4000 && code < 4100) {
      es.close();
      setStatus('closed', `closed: ${reason}`, code);
    }
  });
  // Recovery after being offline (WSBRIDGE_HISTORY_SIZE): each event carries an id, the browser
  // sends the last one back (Last-Event-ID) when it reconnects, and wsbridge sends what was
  // missed before anything new. The stream begins with a "sync" event that says whether it
  // could; when not (gone from the history, or wsbridge restarted), the page reloads its list.
  es.addEventListener('sync', (e) => {
    const { recovered, lost } = JSON.parse(e.data);
    status.dataset.recovered = String(recovered);
    // An app would reload its list from its database; this one has none and starts afresh.
    if (!recovered && lost.length > 0) location.reload();
  });
}

// Send without leaving the page, so the notification shows up here when sent to yourself.
document.getElementById('send').onsubmit = async (e) => {
  e.preventDefault();
  const res = await fetch('/send.php', { method: 'POST', body: new FormData(e.target) });
  e.target.dataset.result = await res.text();
};
if (transport === 'sse') connectSSE(); else connectWS();
