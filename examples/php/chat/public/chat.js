// The chat page: one WebSocket to wsbridge (same origin, so the PHP session cookie goes with
// the handshake), typed JSON both ways, files as binary frames. No framework, no CDN.
'use strict';

const $ = (sel) => document.querySelector(sel);
const state = { rooms: new Map(), room: 'lobby', online: new Set(), ws: null, retry: 0 };

function el(tag, attrs = {}, text = '') {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function log(type, text, data = {}) {
  const li = el('li', { class: 'msg ' + type, 'data-type': type }, text);
  for (const [k, v] of Object.entries(data)) li.dataset[k] = v;
  $('#log').append(li);
  li.scrollIntoView({ block: 'end' });
  return li;
}

function setStatus(s, text, code) {
  const st = $('#status');
  st.dataset.state = s;
  if (code !== undefined) st.dataset.code = code;
  st.textContent = text;
}

function renderRooms() {
  const ul = $('#rooms');
  ul.replaceChildren();
  for (const [name, member] of [...state.rooms].sort()) {
    const li = el('li', { 'data-room': name, 'data-member': member ? '1' : '0' });
    const a = el('a', { href: '#' + name }, '#' + name);
    a.onclick = (e) => { e.preventDefault(); if (member) switchRoom(name); };
    li.append(a);
    if (name !== 'lobby') {
      const b = el('button', { type: 'button' }, member ? 'leave' : 'join');
      b.onclick = () => send({ type: member ? 'leave' : 'join', room: name });
      li.append(' ', b);
    }
    if (name === state.room) li.classList.add('current');
    ul.append(li);
  }
}

function renderOnline() {
  const ul = $('#online');
  ul.replaceChildren(...[...state.online].sort().map((u) => {
    const li = el('li', { 'data-user': u }, u);
    li.onclick = () => { $('#text').value = `/pm ${u} `; $('#text').focus(); };
    return li;
  }));
}

function switchRoom(name) {
  state.room = name;
  $('#room-title').textContent = '#' + name;
  $('#text').placeholder = `Message #${name} — or /pm user text, /join room, /leave room, /kick user`;
  renderRooms();
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

const handlers = {
  welcome(m) {
    state.rooms = new Map(m.rooms.map((r) => [r.name, r.member]));
    state.online = new Set(m.online);
    state.retry = 0;
    renderRooms();
    renderOnline();
    setStatus('open', 'connected');
  },
  say: (m) => log('say', `[#${m.room}] ${m.from}: ${m.text}`, { room: m.room, from: m.from }),
  pm: (m) => log('pm', `[private] ${m.from} → ${m.to}: ${m.text}`, { from: m.from, to: m.to }),
  room(m) {
    if (!state.rooms.has(m.room)) state.rooms.set(m.room, false);
    renderRooms();
    log('notice', `${m.by} created #${m.room}`, { room: m.room });
  },
  joined(m) { state.rooms.set(m.room, true); switchRoom(m.room); },
  left(m) { state.rooms.set(m.room, false); if (state.room === m.room) switchRoom('lobby'); else renderRooms(); },
  presence(m) {
    if (m.room) {
      log('presence', `${m.user} ${m.member ? 'joined' : 'left'} #${m.room}`, { room: m.room, user: m.user });
      return;
    }
    if (m.online) state.online.add(m.user); else state.online.delete(m.user);
    renderOnline();
    log('presence', `${m.user} is ${m.online ? 'online' : 'offline'}`, { user: m.user });
  },
  error: (m) => log('error', m.text),
  info: (m) => log('info', m.text),
};

// A file frame: [uint32 BE header length][JSON header][bytes].
function onFile(buf) {
  const view = new DataView(buf);
  const len = view.getUint32(0);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, len)));
  const blob = new Blob([new Uint8Array(buf, 4 + len)], { type: head.type });
  const url = URL.createObjectURL(blob);
  const li = log('file', `[#${head.room}] ${head.from}: `, { room: head.room, from: head.from, name: head.name, size: blob.size });
  const a = el('a', { href: url, download: head.name }, head.name);
  li.append(a);
  if (head.type.startsWith('image/')) li.append(el('br'), el('img', { src: url, alt: head.name }));
}

function connect() {
  setStatus('connecting', 'connecting…');
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.binaryType = 'arraybuffer';
  state.ws = ws;
  ws.onmessage = (e) => {
    if (e.data instanceof ArrayBuffer) return onFile(e.data);
    const m = JSON.parse(e.data);
    (handlers[m.type] || ((x) => console.warn('unknown message', x)))(m);
  };
  ws.onclose = (e) => {
    // 4000-4099: refused for good (kicked, logged out): do not reconnect.
    if (e.code >= 4000 && e.code <= 4099) {
      setStatus('closed', `disconnected: ${e.reason || e.code}`, e.code);
      return;
    }
    const delay = Math.min(30000, 500 * 2 ** state.retry++) * (0.5 + Math.random() / 2);
    setStatus('reconnecting', `reconnecting in ${Math.round(delay / 1000)} s…`, e.code);
    setTimeout(connect, delay);
  };
}

$('#say').onsubmit = (e) => {
  e.preventDefault();
  const text = $('#text').value.trim();
  $('#text').value = '';
  if (!text) return;
  const [cmd, arg, ...rest] = text.split(/\s+/);
  switch (cmd) {
    case '/pm': return send({ type: 'pm', to: arg, text: rest.join(' ') });
    case '/join': return send({ type: 'join', room: arg });
    case '/leave': return send({ type: 'leave', room: arg });
    case '/create': return send({ type: 'create', room: arg });
    case '/kick': return send({ type: 'kick', user: arg });
    case '/say': return send({ type: 'say', room: arg, text: rest.join(' ') }); // to a room by name
    default: return send({ type: 'say', room: state.room, text });
  }
};

$('#create').onsubmit = (e) => {
  e.preventDefault();
  send({ type: 'create', room: $('#new-room').value.trim() });
  $('#new-room').value = '';
};

$('#file').onchange = async (e) => {
  const file = e.target.files[0];
  e.target.value = '';
  if (!file) return;
  const head = new TextEncoder().encode(JSON.stringify({ room: state.room, name: file.name, type: file.type || 'application/octet-stream' }));
  const body = new Uint8Array(await file.arrayBuffer());
  const frame = new Uint8Array(4 + head.length + body.length);
  new DataView(frame.buffer).setUint32(0, head.length);
  frame.set(head, 4);
  frame.set(body, 4 + head.length);
  if (frame.length > 65536) { log('error', 'files are limited to 64 KiB (WSBRIDGE_MAX_MESSAGE_SIZE)'); return; }
  state.ws.send(frame);
};

connect();
