// Shows every notification pushed to this user, at once. Reconnects with backoff.
'use strict';
let retry = 0;
function connect() {
  const status = document.getElementById('status');
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.onopen = () => { retry = 0; status.dataset.state = 'open'; status.textContent = 'live'; };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type !== 'notification') return;
    const li = document.createElement('li');
    li.className = 'notification';
    li.textContent = `${m.at} ${m.text}`;
    document.getElementById('notifications').prepend(li);
  };
  ws.onclose = () => {
    status.dataset.state = 'reconnecting';
    status.textContent = 'reconnecting…';
    setTimeout(connect, Math.min(30000, 500 * 2 ** retry++));
  };
}
// Send without leaving the page, so the notification shows up here when sent to yourself.
document.getElementById('send').onsubmit = async (e) => {
  e.preventDefault();
  const res = await fetch('/send.php', { method: 'POST', body: new FormData(e.target) });
  e.target.dataset.result = await res.text();
};
connect();
