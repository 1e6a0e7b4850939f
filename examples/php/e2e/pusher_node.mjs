// A pusher-js (its node build) driver for pusher_test.go: it reads one JSON command per line
// on stdin and writes what the clients see, one JSON event per line, on stdout. The test
// decides and asserts; this only does what pusher-js users do.
//
//   {"op":"connect","id":"a","key":"…","host":"127.0.0.1","port":8080,"auth":"http://…/broadcasting/auth","cookie":"user=ann","activityTimeout":300}
//   {"op":"subscribe","id":"a","channel":"private-x","whispers":["client-typing"]}  {"op":"unsubscribe",…}
//   {"op":"trigger","id":"a","channel":"private-x","event":"client-typing","data":{…}}
//   {"op":"disconnect","id":"a"}  {"op":"exit"}
import Pusher from 'pusher-js';
import readline from 'node:readline';

const clients = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function connect(cmd) {
  const options = {
    wsHost: cmd.host,
    wsPort: cmd.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
    // The auth endpoint is the app's, reached through wsbridge's reverse proxy with the
    // session cookie, as a browser's request would be (node's XMLHttpRequest may not set Cookie).
    channelAuthorization: {
      customHandler: async ({ socketId, channelName }, callback) => {
        if (cmd.forge && channelName.startsWith(cmd.forge)) {
          callback(null, { auth: cmd.key + ':' + '00'.repeat(32) }); // a signature the server must refuse
          return;
        }
        try {
          const res = await fetch(cmd.auth, {
            method: 'POST',
            headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cmd.cookie || '' },
            body: new URLSearchParams({ socket_id: socketId, channel_name: channelName }),
          });
          if (!res.ok) {
            callback(new Error('auth ' + res.status), null);
            return;
          }
          callback(null, await res.json());
        } catch (e) {
          callback(e, null);
        }
      },
    },
  };
  if (cmd.activityTimeout) {
    options.activityTimeout = cmd.activityTimeout;
    options.pongTimeout = 5000;
  }
  const p = new Pusher(cmd.key, options);
  clients.set(cmd.id, p);
  p.connection.bind('state_change', (s) =>
    out({ id: cmd.id, type: 'state', previous: s.previous, current: s.current, socket_id: p.connection.socket_id }));
  p.connection.bind('error', (e) => out({ id: cmd.id, type: 'error', code: e?.data?.code ?? e?.error?.data?.code, message: e?.data?.message ?? e?.error?.data?.message }));
  p.connection.bind('message', (m) => {
    if (m.event === 'pusher:pong') out({ id: cmd.id, type: 'pong' });
    // Events that name no channel (publications to users or connections): pusher-js hands
    // them to its global callbacks only.
    else if (!m.channel && !m.event.startsWith('pusher')) out({ id: cmd.id, type: 'global', event: m.event, data: m.data });
  });
}

function subscribe(cmd) {
  const ch = clients.get(cmd.id).subscribe(cmd.channel);
  ch.bind('pusher:subscription_succeeded', (members) => {
    const o = { id: cmd.id, type: 'subscribed', channel: cmd.channel };
    if (cmd.channel.startsWith('presence-')) {
      o.members = [];
      members.each((m) => o.members.push({ id: m.id, info: m.info }));
      o.members.sort((x, y) => (x.id < y.id ? -1 : 1));
      o.me = members.me?.id;
    }
    out(o);
  });
  ch.bind('pusher:subscription_error', (e) => out({ id: cmd.id, type: 'subscription_error', channel: cmd.channel, status: e.status, error: e.error, kind: e.type }));
  ch.bind('pusher:member_added', (m) => out({ id: cmd.id, type: 'member_added', channel: cmd.channel, user_id: m.id, info: m.info }));
  ch.bind('pusher:member_removed', (m) => out({ id: cmd.id, type: 'member_removed', channel: cmd.channel, user_id: m.id }));
  // Global callbacks get no metadata; the events named in "whispers" are bound one by one, as
  // Echo's listenForWhisper does, so that their user_id is seen.
  const whispers = cmd.whispers || [];
  ch.bind_global((event, data) => {
    if (!event.startsWith('pusher:') && !whispers.includes(event)) out({ id: cmd.id, type: 'event', channel: cmd.channel, event, data });
  });
  for (const w of whispers) {
    ch.bind(w, (data, meta) => out({ id: cmd.id, type: 'event', channel: cmd.channel, event: w, data, user_id: meta?.user_id }));
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = JSON.parse(line);
  try {
    switch (cmd.op) {
      case 'connect': connect(cmd); break;
      case 'subscribe': subscribe(cmd); break;
      case 'unsubscribe': clients.get(cmd.id).unsubscribe(cmd.channel); break;
      case 'trigger': out({ id: cmd.id, type: 'triggered', ok: clients.get(cmd.id).channel(cmd.channel).trigger(cmd.event, cmd.data) }); break;
      case 'disconnect': clients.get(cmd.id).disconnect(); break;
      case 'exit':
        for (const p of clients.values()) p.disconnect();
        process.exit(0);
    }
  } catch (e) {
    out({ id: cmd.id, type: 'driver_error', error: String(e) });
  }
});
rl.on('close', () => process.exit(0));
