/*
 * wsbridge.js: a browser client of wsbridge's wsbridge.v1+json subprotocol (docs/PROTOCOL.md,
 * "History and recovery"). It keeps the client's position in every history channel, reconnects
 * after a drop with them as the resume token, drops what it already had, and says when what it
 * missed could not be recovered, so that the page reloads that state from the app.
 *
 *   const conn = WsBridge.connect('wss://example.com/ws', {
 *     onMessage(data, channel) { ... },   // a string, or a Uint8Array for binary; channel or null
 *     onReload(lost, error) { ... },      // missed publications are gone: refetch what they showed
 *   });
 *   conn.send('text'); conn.close();
 *
 * It reconnects after any close but 1000 and 4000-4999 (the app's own decisions), after
 * `retry` ms (default 1000). No dependencies; works as a classic script or an import.
 */
(function (global) {
  'use strict';

  function b64url(s) {
    const bytes = new TextEncoder().encode(s);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function connect(url, h) {
    let positions = {};
    let ws = null;
    let stopped = false;
    const retry = h.retry || 1000;

    function open() {
      let u = url;
      if (Object.keys(positions).length > 0) {
        u += (u.indexOf('?') < 0 ? '?' : '&') + 'lastEventId=' + b64url(JSON.stringify(positions));
      }
      ws = new global.WebSocket(u, ['wsbridge.v1+json']);
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'sync') {
          // Where the client stands now, in the channels PHP joined this time.
          positions = m.positions;
          if (h.onSync) h.onSync(m);
          if (!m.recovered && h.onReload) h.onReload(m.lost, m.error || '');
          return;
        }
        if (m.type === 'join') {
          // Joined a history channel after the open: resume it from here too.
          positions[m.channel] = { epoch: m.epoch, offset: m.offset };
          return;
        }
        if (m.type === 'publication') {
          const p = positions[m.channel];
          if (p && p.epoch === m.epoch && m.offset <= p.offset) return; // had it already
          positions[m.channel] = { epoch: m.epoch, offset: m.offset };
        }
        const data = m.data !== undefined ? m.data : Uint8Array.from(atob(m.data_base64), (c) => c.charCodeAt(0));
        h.onMessage(data, m.channel || null);
      };
      ws.onclose = (e) => {
        if (h.onClose) h.onClose(e);
        if (!stopped && e.code !== 1000 && !(e.code >= 4000 && e.code <= 4999)) setTimeout(open, retry);
      };
    }

    open();
    return {
      send(data) { ws.send(data); },
      close() { stopped = true; ws.close(1000); },
      positions() { return positions; },
    };
  }

  global.WsBridge = { connect };
})(typeof window !== 'undefined' ? window : globalThis);
