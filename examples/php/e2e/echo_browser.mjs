// Laravel Echo + pusher-js in Debian's chromium against wsbridge's Pusher mode: the page of
// examples/php/echo, served through wsbridge's reverse proxy. Started by echo_browser_test.go,
// which passes APP_URL (wsbridge's public address), API_URL (its internal one) and ARTIFACTS.
// Every wait is on page state, with a timeout; nothing sleeps. Exits 0 only when every check passed.
import { chromium } from 'playwright-core';
import { join } from 'node:path';

const { APP_URL, API_URL, ARTIFACTS } = process.env;
const WAIT = { timeout: 20000 };
let passed = 0;
const ok = (what) => { passed++; console.log(`ok   ${what}`); };
const assert = (cond, what) => { if (!cond) throw new Error(`FAIL ${what}`); ok(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  timeout: 60000,
});

// A logged-in user's page, connected, with the channels a Laravel page would use.
async function open(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`page error (${name}): ${e}`));
  await page.goto(`${APP_URL}/login?user=${name}`); // sets the session cookie, redirects to /
  await page.waitForFunction(() => (window.seen || []).some((o) => o.type === 'connected'), null, WAIT);
  await page.evaluate((me) => {
    const log = (o) => window.seen.push(o);
    Echo.channel('news').listen('Headline', (e) => log({ type: 'headline', e }));
    Echo.private('chat')
      .listen('Said', (e) => log({ type: 'said', e }))
      .listenForWhisper('typing', (e) => log({ type: 'whisper', e }))
      .subscribed(() => log({ type: 'subscribed', channel: 'chat' }));
    Echo.private(`user.${me === 'ann' ? 'bob' : 'ann'}`) // someone else's: the app refuses
      .error((e) => log({ type: 'refused', status: e.status, error: e.error }));
    Echo.join('room')
      .here((users) => log({ type: 'here', users: users.map((u) => u.name).sort() }))
      .joining((u) => log({ type: 'joining', name: u.name }))
      .leaving((u) => log({ type: 'leaving', name: u.name }));
  }, name);
  return { name, context, page };
}
const seen = (p, fn, arg) => p.page.waitForFunction(
  ([f, a]) => (window.seen || []).find((o) => new Function('o', 'a', `return (${f})(o, a)`)(o, a)), [fn.toString(), arg], WAIT)
  .then((h) => h.jsonValue());
const count = (p, type) => p.page.evaluate((t) => window.seen.filter((o) => o.type === t).length, type);
async function publish(body) {
  const res = await fetch(`${API_URL}/v1/publish`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`publish: ${res.status} ${await res.text()}`);
}

try {
  const ann = await open('ann');
  let o = await seen(ann, (o) => o.type === 'here');
  assert(JSON.stringify(o.users) === '["Ann"]', 'presence here: ann alone');
  await seen(ann, (o) => o.type === 'subscribed' && o.channel === 'chat');
  ok('private channel authorised by the app through the proxy, with the session cookie');
  o = await seen(ann, (o) => o.type === 'refused');
  assert(o.status === 403, `another user's private channel refused by the app (${o.status})`);

  const bob = await open('bob');
  o = await seen(bob, (o) => o.type === 'here');
  assert(JSON.stringify(o.users) === '["Ann","Bob"]', 'presence here: bob sees ann and bob');
  o = await seen(ann, (o) => o.type === 'joining');
  assert(o.name === 'Bob', 'presence joining: ann sees bob');
  await seen(bob, (o) => o.type === 'subscribed' && o.channel === 'chat');

  await publish({ to: { channels: ['news'] }, event: 'App\\Events\\Headline', data: JSON.stringify({ title: 'Hello' }) });
  for (const p of [ann, bob]) {
    o = await seen(p, (o) => o.type === 'headline');
    assert(o.e.title === 'Hello', `${p.name}: public channel event, as Laravel names it`);
  }

  await bob.page.evaluate(() => Echo.private('chat').whisper('typing', { name: 'Bob' }));
  o = await seen(ann, (o) => o.type === 'whisper');
  assert(o.e.name === 'Bob', 'whisper reaches ann');

  // toOthers: Laravel sends the browser's X-Socket-ID as socket_id; here it is the native
  // API's except, which the Pusher HTTP API maps it to.
  const annSocket = await ann.page.evaluate(() => Echo.socketId());
  assert(/^\d+\.\d+$/.test(annSocket), `socket id ${annSocket} is \\d+.\\d+`);
  await publish({ to: { channels: ['private-chat'] }, event: 'App\\Events\\Said', data: JSON.stringify({ n: 1 }), except: annSocket });
  await publish({ to: { channels: ['private-chat'] }, event: 'App\\Events\\Said', data: JSON.stringify({ n: 2 }) });
  await seen(bob, (o) => o.type === 'said' && o.e.n === 2);
  assert(await count(bob, 'said') === 2, 'toOthers: bob gets both');
  await seen(ann, (o) => o.type === 'said' && o.e.n === 2);
  assert(await count(ann, 'said') === 1, 'toOthers: ann, the sender, gets only the second');
  assert(await count(bob, 'whisper') === 0, 'a whisper does not come back to its sender');

  await ann.page.screenshot({ path: join(ARTIFACTS, 'echo.png') });
  await bob.context.close();
  o = await seen(ann, (o) => o.type === 'leaving');
  assert(o.name === 'Bob', 'presence leaving: ann sees bob go');
  console.log(`${passed} passed, 0 failed`);
} catch (e) {
  console.log(String(e.stack || e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
