// The self-check of examples/php/run-cluster.sh (DEMO_CHECK=1): two real browsers (Debian's
// chromium, driven by playwright-core) on two different wsbridge nodes of one cluster chat in
// the lobby. NODE_URLS is a comma-separated list of the nodes' own public URLs. Every wait is on
// page state with a timeout; exits 0 only when every check passed.
import { chromium } from 'playwright-core';

const urls = (process.env.NODE_URLS || '').split(',').filter(Boolean);
if (urls.length < 2) {
  console.log('NODE_URLS needs two nodes');
  process.exit(2);
}
const WAIT = { timeout: 15000 };
const ok = (what) => console.log(`ok   ${what}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  timeout: 60000,
});

async function login(url, name) {
  const page = await (await browser.newContext()).newPage();
  page.on('pageerror', (e) => console.log(`page error (${name}): ${e}`));
  await page.goto(url);
  await page.selectOption('select[name=name]', name);
  await page.fill('input[name=password]', 'demo');
  await Promise.all([page.waitForURL(url + '/', WAIT), page.click('button[type=submit]')]);
  await page.waitForSelector('#status[data-state=open]', WAIT);
  return page;
}
const sees = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll('#log li.say')].some((e) => e.textContent.includes(t)), text, WAIT);
async function say(page, line) {
  await page.fill('#text', line);
  await page.press('#text', 'Enter');
}

try {
  const bob = await login(urls[0], 'bob');
  const cat = await login(urls[1], 'cat');
  ok(`bob's socket is on ${urls[0]}, cat's on ${urls[1]}`);
  await say(bob, 'hello from node 1');
  await sees(cat, 'bob: hello from node 1');
  await say(cat, 'hello from node 2');
  await sees(bob, 'cat: hello from node 2');
  ok('bob and cat chat across nodes, through the broker');
  await browser.close();
} catch (e) {
  console.log(`FAIL ${e.message}`);
  await browser.close();
  process.exit(1);
}
