// The PHP examples in a real browser: Debian's chromium driven by playwright-core (no browser
// download). Started by browser_test.go, which runs nginx + php-fpm + wsbridge and passes
// CHAT_URL, NOTIFY_URL, NOTIFY_CLI_ENV (JSON) and ARTIFACTS. Every wait is on page state, with a
// timeout; nothing sleeps. Exits 0 only when every check passed.
import { chromium } from 'playwright-core';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { crc32, deflateSync } from 'node:zlib';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const { CHAT_URL, NOTIFY_URL, ARTIFACTS } = process.env;
const WAIT = { timeout: 20000 };
const here = dirname(fileURLToPath(import.meta.url));
let passed = 0;
const ok = (what) => { passed++; console.log(`ok   ${what}`); };
const assert = (cond, what) => { if (!cond) throw new Error(`FAIL ${what}`); ok(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  // No --user-data-dir: playwright refuses it in launch() and always gives chromium a fresh
  // temporary profile of its own, removed on close.
  timeout: 60000,
});

// Texts in a page's chat log, by selector.
const texts = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));
const sees = (page, sel, text) => page.waitForFunction(
  ([s, t]) => [...document.querySelectorAll(s)].some((e) => e.textContent.includes(t)), [sel, text], WAIT);
// Sends a line through the chat's input, as a person types it.
async function type(page, line) {
  await page.fill('#text', line);
  await page.press('#text', 'Enter');
}

// A real 96x96 RGB PNG (a gradient with noise, so it does not compress to nothing).
function makePNG(w, h) {
  const chunk = (type, data) => {
    const td = Buffer.concat([Buffer.from(type), data]);
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const raw = Buffer.alloc(h * (1 + w * 3));
  for (let y = 0, i = 0; y < h; y++) {
    raw[i++] = 0; // filter: none
    for (let x = 0; x < w; x++) {
      raw[i++] = x * 2.6; raw[i++] = y * 2.6; raw[i++] = (x * 31 + y * 17) % 256;
    }
  }
  return Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 0 })), chunk('IEND', Buffer.alloc(0))]);
}

async function login(context, name) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`page error (${name}): ${e}`));
  await page.goto(CHAT_URL);
  await page.selectOption('select[name=name]', name);
  await page.fill('input[name=password]', 'demo');
  await Promise.all([page.waitForURL(CHAT_URL + '/', WAIT), page.click('button[type=submit]')]);
  await page.waitForSelector('#status[data-state=open]', WAIT);
  return page;
}

try {
  const [annCtx, bobCtx, catCtx] = [await browser.newContext(), await browser.newContext(), await browser.newContext()];
  const ann = await login(annCtx, 'ann');
  const bob = await login(bobCtx, 'bob');
  const cat = await login(catCtx, 'cat');
  // bob's second tab: same browser context, same session cookie, no second login.
  const bob2 = await bobCtx.newPage();
  await bob2.goto(CHAT_URL);
  await bob2.waitForSelector('#status[data-state=open]', WAIT);
  ok('three users logged in with PHP sessions; the session cookie authenticated each socket');

  // Rooms: ann creates #dev, bob joins it from the room list (both his tabs follow).
  await type(ann, '/create dev');
  await ann.waitForSelector('#room-title:text("#dev")', WAIT);
  await bob.click('#rooms li[data-room=dev] button:text("join")', WAIT);
  await bob.waitForSelector('#room-title:text("#dev")', WAIT);
  await bob2.waitForSelector('#rooms li[data-room=dev][data-member="1"]', WAIT);
  await sees(ann, '#log li.presence', 'bob joined #dev');
  ok('room created and joined; the join notice reached the room');

  await type(ann, 'hello dev');
  await sees(bob, '#log li.say[data-room=dev]', 'ann: hello dev');
  await type(bob, 'hi ann');
  await sees(ann, '#log li.say[data-room=dev]', 'bob: hi ann');
  ok('two users chat in a room');

  // A non-member cannot post to #dev: PHP answers cat with an error and publishes nothing.
  await type(cat, '/say dev sneaky');
  await sees(cat, '#log li.error', 'not a member of #dev');
  await type(ann, 'barrier-1'); // sent after PHP refused cat's message, so it arrives after it would have
  await sees(bob, '#log li.say', 'barrier-1');
  assert(!(await texts(bob, '#log li')).some((t) => t.includes('sneaky')), 'a non-member\'s post to a room is refused by PHP');

  // A private message reaches every tab of its target and nobody else.
  await type(ann, '/pm bob secret-1');
  await sees(bob, '#log li.pm', 'secret-1');
  await sees(bob2, '#log li.pm', 'secret-1');
  await sees(ann, '#log li.pm', 'secret-1'); // the sender's own copy
  await type(ann, '/say lobby barrier-2');
  await sees(cat, '#log li.say[data-room=lobby]', 'barrier-2');
  assert((await texts(cat, '#log li')).every((t) => !t.includes('secret-1')), 'a private message reaches both of bob\'s tabs and not cat');

  // A picture as a binary frame, bob -> #dev, arrives byte for byte.
  const png = makePNG(96, 96);
  await bob.setInputFiles('#file', { name: 'pixel.png', mimeType: 'image/png', buffer: png });
  const link = await ann.waitForSelector('#log li.file[data-from=bob] a', WAIT);
  const got = await ann.evaluate(async (href) => Array.from(new Uint8Array(await (await fetch(href)).arrayBuffer())), await link.getAttribute('href'));
  const sha = (b) => createHash('sha256').update(b).digest('hex');
  assert(sha(Buffer.from(got)) === sha(png) && got.length === png.length, `a ${png.length}-byte file frame arrived intact (sha256 ${sha(png).slice(0, 12)}…)`);
  await ann.waitForFunction(() => document.querySelector('#log li.file[data-from=bob] img')?.naturalWidth === 96, null, WAIT);
  ok('the picture decoded and shows in the page');

  // Kicking: bob is no admin; ann is.
  await type(bob, '/kick cat');
  await sees(bob, '#log li.error', 'only an admin can kick');
  await type(ann, '/say lobby barrier-3');
  await sees(cat, '#log li.say', 'barrier-3');
  assert(await cat.$('#status[data-state=open]') !== null, 'a non-admin cannot kick');
  await type(ann, '/kick cat');
  await cat.waitForSelector('#status[data-state=closed][data-code="4001"]', WAIT);
  await sees(ann, '#log li.info', 'kicked cat');
  ok('the admin kicked cat: her socket was closed with 4001 and the page stopped reconnecting');

  if (ARTIFACTS) {
    await ann.screenshot({ path: join(ARTIFACTS, 'chat.png'), fullPage: true });
    console.log(`screenshot: ${join(ARTIFACTS, 'chat.png')}`);
  }

  // Notify: a page waits; an ordinary PHP request (send.php) and a CLI script push to it.
  const nctx = await browser.newContext();
  const note = await nctx.newPage();
  await note.goto(NOTIFY_URL);
  await note.fill('input[name=login]', 'nina');
  await Promise.all([note.waitForURL(NOTIFY_URL + '/', WAIT), note.press('input[name=login]', 'Enter')]);
  await note.waitForSelector('#status[data-state=open]', WAIT);
  const res = await fetch(NOTIFY_URL + '/send.php', { method: 'POST', body: new URLSearchParams({ to: 'nina', text: 'build 42 passed' }) });
  const answer = await res.json();
  assert(res.status === 200 && answer.delivered === 1, `send.php answered ${JSON.stringify(answer)}`);
  await sees(note, '#notifications li', 'build 42 passed');
  ok('a notification pushed from a PHP request appeared on the page');
  const cli = execFileSync('php', [resolve(here, '../notify/bin/notify.php'), 'nina', 'nightly report ready'],
    { env: { ...process.env, ...JSON.parse(process.env.NOTIFY_CLI_ENV || '{}') }, timeout: 20000 }).toString();
  assert(cli.includes('delivered to 1 page(s)'), `bin/notify.php: ${cli.trim()}`);
  await sees(note, '#notifications li', 'nightly report ready');
  ok('a notification pushed from a PHP script appeared on the page');
  if (ARTIFACTS) await note.screenshot({ path: join(ARTIFACTS, 'notify.png') });

  // The same page over Server-Sent Events, through nginx (which must not buffer the stream):
  // chromium's EventSource parses what wsbridge writes, and one push reaches both pages.
  const sse = await nctx.newPage();
  sse.on('pageerror', (e) => console.log(`page error (sse): ${e}`));
  const opened = sse.waitForRequest((r) => new URL(r.url()).pathname === '/events', WAIT);
  await sse.goto(NOTIFY_URL + '/?transport=sse');
  assert((await opened).resourceType() === 'eventsource', 'the SSE page opened /events with EventSource');
  await sse.waitForSelector('#status[data-state=open][data-transport=sse]', WAIT);
  const both = await (await fetch(NOTIFY_URL + '/send.php', { method: 'POST', body: new URLSearchParams({ to: 'nina', text: 'deploy <done> \u00e9\n2' }) })).json();
  assert(both.delivered === 2, `one push to nina reached her WebSocket page and her SSE page (${JSON.stringify(both)})`);
  await sees(sse, '#notifications li', 'deploy <done> \u00e9\n2');
  await sees(note, '#notifications li', 'deploy <done> \u00e9\n2');
  ok('the notification appeared on the SSE page and on the WebSocket page');
  // Recovery after being offline: the SSE page's stream is ended (the API closes it with 3000,
  // which the page does not take as "stay away"); its reconnect is held, as a network that is
  // down would; a notification is pushed meanwhile, to the WebSocket page alone; then the
  // reconnect goes through, with the last event's id as Last-Event-ID, and the missed
  // notification appears on the SSE page, recovered from the channel's history.
  const cliEnv = JSON.parse(process.env.NOTIFY_CLI_ENV || '{}');
  const api = (path, init = {}) => fetch(cliEnv.WSBRIDGE_API + path,
    { ...init, headers: { Authorization: `Bearer ${cliEnv.WSBRIDGE_API_TOKEN}`, 'Content-Type': 'application/json' } });
  let reconnect;
  const held = new Promise((resolve) => { reconnect = resolve; });
  await sse.route('**/events', (route) => reconnect(route));
  const { connections } = await (await api('/v1/connections?user=nina')).json();
  const stream = connections.find((c) => c.transport === 'sse');
  const lastId = await sse.evaluate(() => window.notifyLastEventId);
  assert(typeof lastId === 'string' && lastId !== '', 'the SSE page holds an event id to resume from');
  assert(stream !== undefined, 'the SSE page is listed among nina\'s connections');
  await api(`/v1/connections/${stream.id}/close`, { method: 'POST', body: JSON.stringify({ code: 3000, reason: 'network change' }) });
  const route = await held; // the browser is reconnecting, and held
  const missed = await (await fetch(NOTIFY_URL + '/send.php', { method: 'POST', body: new URLSearchParams({ to: 'nina', text: 'pushed while offline' }) })).json();
  assert(missed.delivered === 1, `while the SSE page was offline the push reached only the WebSocket page (${JSON.stringify(missed)})`);
  // (Chromium adds Last-Event-ID below what playwright's interception shows: the proof that it
  // was sent is the notification appearing, which only the history still had.)
  await route.continue();
  await sees(sse, '#notifications li', 'pushed while offline');
  await sse.waitForSelector('#status[data-recovered=true]', WAIT);
  const shown = await texts(sse, '#notifications li');
  assert(shown.filter((t) => t.includes('pushed while offline')).length === 1, 'the SSE page recovered the notification pushed while it was offline, once');
  if (ARTIFACTS) await sse.screenshot({ path: join(ARTIFACTS, 'notify-sse.png') });

  console.log(`browser: ${passed} passed, 0 failed`);
} catch (e) {
  console.log(String(e.stack || e));
  if (ARTIFACTS) {
    for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
      await p.screenshot({ path: join(ARTIFACTS, `failure-${i}.png`) }).catch(() => {});
    }
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
