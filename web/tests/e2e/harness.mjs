// End-to-end harness: the real `meetease` launcher on ephemeral ports, and
// Debian's headless Chromium driven by playwright-core with a fake camera and
// microphone. Every process started here is stopped by its PID.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, mkdirSync, copyFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const WEB_DIR = path.resolve(here, '..', '..');
export const REPO = path.resolve(WEB_DIR, '..');
export const SCREENSHOT_DIR = path.join(REPO, 'docs', 'screenshots');

const SERVICES = ['gateway', 'auth', 'users', 'signaling', 'notify', 'analytics', 'sfu'];

/** Flags from ../shared/design/environment.md: headless, loopback ICE, fake media. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  // Screen sharing without a picker: share the tab itself.
  '--auto-select-desktop-capture-source=MeetEase',
  // Pages in background contexts must keep decoding and sending media.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export function chromiumPath() {
  const p = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  if (!existsSync(p)) {
    throw new Error(`Chromium is not installed at ${p}: apt-get install -y chromium (web/tests/run.sh does it)`);
  }
  return p;
}

/**
 * Start `target/debug/meetease` with every port 0 (the gateway's `gatewayPort`
 * when given) and a fresh data folder.
 * Resolves to {url, addrs, pid, stop(), logs()} once it prints its banner.
 */
export async function startPlatform({ env = {}, gatewayPort = 0 } = {}) {
  if (process.env.E2E_MOCK === '1') return startMockPlatform();
  const bin = process.env.MEETEASE_BIN || path.join(REPO, 'target', 'debug', 'meetease');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it first (cargo build -p meetease)`);
  const dataDir = mkdtempSync(path.join(tmpdir(), 'meetease-e2e-'));
  const args = [];
  for (const s of SERVICES) args.push(`--${s}-port`, s === 'gateway' ? String(gatewayPort) : '0');
  args.push('--sfu-udp-port', '0', '--data-dir', dataDir, '--web-dir', WEB_DIR);
  const childEnv = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...env };
  for (const v of ['DATABASE_URL', 'REDIS_URL', 'AMQP_URL', 'GATEWAY_PORT', 'MEETEASE_DATA_DIR', 'MEETEASE_WEB_DIR']) {
    if (!(v in env)) delete childEnv[v];
  }
  const child = spawn(bin, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  // However this test process ends (a crash, a signal, an interrupted run), the launcher goes too.
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };
  process.once('exit', killOnExit);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      killOnExit();
      process.exit(130);
    });
  }
  const log = [];
  const keep = (line) => {
    log.push(line);
    if (log.length > 2000) log.shift();
  };
  createInterface({ input: child.stderr }).on('line', keep);
  const addrs = {};
  const banner = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`launcher did not start within 60 s:\n${log.join('\n')}`)), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`launcher exited with ${code}:\n${log.join('\n')}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      keep(line);
      const m = line.match(/^(\w+) listening on http:\/\/(\S+)/);
      if (m) addrs[m[1]] = m[2];
      if (line.startsWith('MeetEase is running at ')) {
        clearTimeout(timer);
        resolve(line);
      }
    });
  });
  child.removeAllListeners('exit');
  if (!addrs.gateway) throw new Error(`no gateway address in the launcher output:\n${log.join('\n')}`);
  const url = `http://${addrs.gateway}`;
  return {
    url,
    addrs,
    banner,
    pid: child.pid,
    logs: () => log.join('\n'),
    async stop() {
      if (process.env.E2E_SFU_COUNTERS === '1' && addrs.sfu) {
        // A measurement aid (docs/benchmarks/sfu-core.md): how the SFU sent
        // what the browsers exchanged, GSO runs included.
        try {
          const text = await (await fetch(`http://${addrs.sfu}/metrics`)).text();
          const wanted = /^meetease_sfu_(datagrams_sent|udp_send_calls|udp_gso_datagrams|rtp_forwarded)_total/;
          console.log(text.split('\n').filter((line) => wanted.test(line)).join('\n'));
        } catch (error) {
          console.log(`no SFU counters: ${error.message}`);
        }
      }
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        process.kill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (child.exitCode === null) process.kill(child.pid, 'SIGKILL');
        }, 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A port free on 127.0.0.1 right now (for a URL some setting must name before a start). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * The real OpenID provider of auth's tests (auth/tests/oidc/provider.mjs, the npm
 * package oidc-provider; scripts/test runs `npm ci` there) on an ephemeral port,
 * accepting `redirectUris`. Its client is `meetease` / `meetease-test-secret`; its
 * interaction page signs in whoever `?account=<email>` names, `?deny=1` refuses.
 * Resolves to {issuer, pid, stop()}.
 */
export async function startOidcProvider(redirectUris) {
  const dir = path.join(REPO, 'auth', 'tests', 'oidc');
  if (!existsSync(path.join(dir, 'node_modules', 'oidc-provider', 'package.json'))) {
    throw new Error(`the OpenID provider's npm packages are missing: run \`npm ci\` in ${dir} (scripts/test does it)`);
  }
  const child = spawn(process.execPath, ['provider.mjs'], {
    cwd: dir,
    env: { ...process.env, REDIRECT_URIS: JSON.stringify(redirectUris) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };
  process.once('exit', killOnExit);
  const stderr = [];
  createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
  const issuer = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the OpenID provider did not start within 20 s:\n${stderr.join('\n')}`)), 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the OpenID provider exited with ${code}:\n${stderr.join('\n')}`));
    });
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line).issuer);
      } catch {
        reject(new Error(`the OpenID provider printed ${line}`));
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    issuer,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        process.kill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (child.exitCode === null) process.kill(child.pid, 'SIGKILL');
        }, 5_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/** One headless Chromium; each person gets their own context (separate storage). */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/** A page for one person, logging console errors into `errors`. */
export async function newPerson(browser, baseURL, { viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ baseURL, viewport, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  page.setDefaultTimeout(20_000);
  return { context, page, errors };
}

let counter = 0;
export function uniqueEmail(tag) {
  counter += 1;
  return `${tag}-${Date.now().toString(36)}-${process.pid}-${counter}@example.test`;
}

export const PASSWORD = 'correct horse battery staple';

/** Sign up through the form; resolves on the meetings home. */
export async function signUp(page, { name, email, password = PASSWORD }) {
  await page.goto('/signup');
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign up', exact: true }).click();
  await page.getByRole('button', { name: 'New meeting', exact: true }).waitFor();
}

/** Poll `fn` until it returns a truthy value or `timeout` ms pass. */
export async function eventually(fn, { timeout = 20_000, interval = 250, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${message}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The tile (figure) of a person, by the name it shows. */
export function tileOf(page, name) {
  return page.getByRole('figure', { name, exact: true });
}

/**
 * Wait until the video inside `name`'s tile plays: non-zero size and frames
 * advancing (currentTime and decoded frame count grow between two samples).
 */
export async function expectVideoPlaying(page, name, { timeout = 30_000 } = {}) {
  const video = tileOf(page, name).locator('video');
  const sample = () => video.evaluate((v) => ({
    w: v.videoWidth,
    h: v.videoHeight,
    t: v.currentTime,
    frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
  }));
  return eventually(async () => {
    const a = await sample();
    if (!(a.w > 0 && a.h > 0)) return false;
    await new Promise((r) => setTimeout(r, 600));
    const b = await sample();
    return b.t > a.t && b.frames > a.frames ? b : false;
  }, { timeout, message: `${name}'s video to play` });
}

/** Save a screenshot under the temp folder, and under docs/screenshots when UPDATE_SCREENSHOTS=1. */
export async function screenshot(page, name, { fullPage = false } = {}) {
  const dir = path.join(tmpdir(), 'meetease-e2e-screenshots');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  if (process.env.UPDATE_SCREENSHOTS === '1') {
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    copyFileSync(file, path.join(SCREENSHOT_DIR, `${name}.png`));
  }
  return file;
}

/**
 * The mock platform (web/tests/mock): Node stands in for the services and a
 * Chromium page for the SFU. For developing the client only; E2E_MOCK=1.
 */
async function startMockPlatform() {
  const { startMock } = await import('../mock/server.mjs');
  const sfuBrowser = await launchBrowser();
  const mock = await startMock({
    launchSfuPage: async (url) => {
      const page = await sfuBrowser.newPage();
      page.on('console', (m) => {
        if (m.type() === 'error') console.log(`[sfu page] ${m.text()}`);
      });
      await page.goto(url);
      return page;
    },
  });
  return {
    url: mock.url,
    addrs: {},
    logs: () => '',
    async stop() {
      await mock.stop();
      await sfuBrowser.close();
    },
  };
}

/** After a failure: print a page's errors and its meeting client's log. */
export async function dumpPage(person) {
  const failed = process.exitCode || person.errors.length;
  if (!failed && process.env.E2E_VERBOSE !== '1') return;
  let log = [];
  try {
    log = await person.page.evaluate(() => (window.meetease ? window.meetease.log : []));
  } catch {
    // The page is gone.
  }
  console.log(`--- ${person.page.url()}\n${person.errors.join('\n')}\n${log.join('\n')}`);
}
