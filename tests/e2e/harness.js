// Real parts for the end-to-end tests: TigerVNC's Xvnc with a solid-colour root window, the
// consolegate binary serving the console page, and Debian's Chromium driven by playwright-core.
// Everything listens on 127.0.0.1 only; every wait is bounded.
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const pki = (name) => path.join(repo, 'tests/fixtures/pki', name);
export const artifacts = path.join(repo, 'test-artifacts');
const binary = process.env.CONSOLEGATE_BIN || path.join(repo, 'target/debug/consolegate');
const webRoot = process.env.CONSOLEGATE_WEB_ROOT || path.join(repo, 'target/web');

/** Waits until `check` returns a truthy value, at most `timeout` ms; returns that value. */
export async function waitFor(what, check, { timeout = 15000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) {
        return value;
      }
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Sends SIGTERM and waits for the exit, at most `timeout` ms; the timer goes with the exit, so
 * that it does not keep the test process alive.
 */
async function terminate(child, timeout) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  let timer;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((resolve) => { timer = setTimeout(resolve, timeout); })]);
  clearTimeout(timer);
}

let nextDisplay = 40 + (process.pid % 50);

/** TigerVNC's Xvnc on 127.0.0.1 with a password and a solid-colour root window. */
export class Xvnc {
  static async start({ name, colour, security = 'VncAuth', cert, key, password = 'e2e-secret' }) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `consolegate-e2e-${name}-`));
    const passwordFile = path.join(dir, 'passwd');
    fs.writeFileSync(passwordFile, execFileSync('vncpasswd', ['-f'], { input: password }));
    fs.chmodSync(passwordFile, 0o600);
    for (let attempt = 0; attempt < 20; attempt += 1) {
      const display = nextDisplay;
      nextDisplay += 1;
      if (fs.existsSync(`/tmp/.X${display}-lock`) || fs.existsSync(`/tmp/.X11-unix/X${display}`)) {
        continue;
      }
      const port = await freePort();
      const logFile = path.join(dir, 'Xvnc.log');
      const args = [
        `:${display}`, '-rfbport', String(port), '-interface', '127.0.0.1', '-localhost',
        '-nolisten', 'tcp', '-geometry', '640x400', '-depth', '24', '-desktop', name,
        '-SecurityTypes', security, '-PasswordFile', passwordFile,
      ];
      if (cert) {
        args.push('-X509Cert', cert, '-X509Key', key);
      }
      const log = fs.openSync(logFile, 'w');
      const child = spawn('Xvnc', args, { stdio: ['ignore', log, log] });
      fs.closeSync(log);
      const server = new Xvnc(name, display, port, password, child, logFile, dir);
      const started = await waitFor(`Xvnc ${name} to listen`, () => {
        if (child.exitCode !== null) {
          return 'exited';
        }
        return server.log().includes('Listening for VNC connections') ? 'listening' : null;
      });
      if (started === 'exited') {
        continue; // display taken after all: try the next one
      }
      await server.setColour(colour);
      return server;
    }
    throw new Error(`Xvnc ${name} could not start`);
  }

  constructor(name, display, port, password, child, logFile, dir) {
    Object.assign(this, { name, display, port, password, child, logFile, dir });
  }

  log() {
    return fs.readFileSync(this.logFile, 'utf8');
  }

  /** Connections the VNC server accepted so far, from its own log. */
  accepted() {
    return (this.log().match(/Connections: accepted:/g) || []).length;
  }

  /** Paints the root window, retrying while the X socket comes up. */
  async setColour(colour) {
    this.colour = colour;
    await waitFor(`xsetroot on :${this.display}`, () => {
      execFileSync('xsetroot', ['-solid', colour], {
        env: { ...process.env, DISPLAY: `:${this.display}` },
        stdio: 'ignore',
      });
      return true;
    });
  }

  /**
   * Watches the pointer on the X display (`xev -root`): `motions()` are the root-window
   * positions the VNC server moved it to, in order.
   */
  watchPointer() {
    const xev = spawn('stdbuf', ['-oL', 'xev', '-root', '-event', 'mouse'], {
      env: { ...process.env, DISPLAY: `:${this.display}` },
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let output = '';
    xev.stdout.setEncoding('utf8');
    xev.stdout.on('data', (chunk) => { output += chunk; });
    return {
      motions: () => [...output.matchAll(/MotionNotify[\s\S]*?root:\((\d+),(\d+)\)/g)].map((m) => [Number(m[1]), Number(m[2])]),
      stop: () => xev.kill('SIGTERM'),
    };
  }

  async stop() {
    await terminate(this.child, 5000);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The consolegate binary on an ephemeral port, TLS from the test PKI, serving the web root. */
export class Proxy {
  static async start(name, extra = '') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `consolegate-e2e-proxy-${name}-`));
    const config = path.join(dir, 'consolegate.conf');
    fs.writeFileSync(config, [
      'PROXY_HOST=127.0.0.1',
      'PROXY_PORT=0',
      `SSL_CERTIFICATE=${pki('proxy.pem')}`,
      `SSL_KEY=${pki('proxy.key')}`,
      `CERT_FOR_DATA_VERIFICATION=${pki('engine.pem')}`,
      `WEB_ROOT=${webRoot}`,
      extra,
      '',
    ].join('\n'));
    const child = spawn(binary, ['serve', '--config', config], {
      env: { ...process.env, RUST_LOG: 'consolegate=debug', NO_COLOR: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const proxy = new Proxy(name, child, dir);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => { proxy.output += chunk; });
    const address = await waitFor(`proxy ${name} to listen`, () => {
      if (child.exitCode !== null) {
        throw new Error(`proxy exited: ${proxy.output}`);
      }
      const match = proxy.output.match(/listening on (127\.0\.0\.1:\d+)/);
      return match && match[1];
    });
    proxy.origin = `https://localhost:${address.split(':')[1]}`;
    return proxy;
  }

  constructor(name, child, dir) {
    Object.assign(this, { name, child, dir, output: '' });
  }

  logs() {
    return this.output;
  }

  /** The first log line matching `pattern`, waiting for it (bounded). */
  async logLine(pattern, timeout = 10000) {
    return waitFor(`proxy log line ${pattern}`, () => this.output.split('\n').find((line) => pattern.test(line)), { timeout });
  }

  async stop() {
    await terminate(this.child, 15000);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A ticket from `ticket sign`, as an engine issues it (signer: a key in the test PKI); `now`
 * (a Date) signs it as if issued then.
 */
export function ticket(port, { sslTarget = false, signer = 'engine', lifetime = 120, now } = {}) {
  const args = [
    'ticket', 'sign', '--key', pki(`${signer}.key`), '--cert', pki(`${signer}.pem`),
    '--host', '127.0.0.1', '--port', String(port), '--lifetime', String(lifetime),
  ];
  if (sslTarget) {
    args.push('--ssl-target');
  }
  if (now) {
    args.push('--now', now.toISOString());
  }
  return execFileSync(binary, args, { encoding: 'utf8' }).trim();
}

/**
 * A TCP relay on 127.0.0.1 between the browser and the proxy, standing for the network: the
 * test cuts it (every connection reset at once, as when a Wi-Fi link drops), freezes it
 * (connections stay open but nothing passes, as when a NAT forgets them), or refuses new
 * connections for a while. It keeps its port throughout, so the page's origin stays the same.
 */
export class Relay {
  static async start(targetPort) {
    const relay = new Relay(targetPort);
    await new Promise((resolve, reject) => {
      relay.server.once('error', reject);
      relay.server.listen(0, '127.0.0.1', resolve);
    });
    relay.port = relay.server.address().port;
    relay.origin = `https://localhost:${relay.port}`;
    return relay;
  }

  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.refusing = false;
    /** Connections accepted, and of them refused at once. */
    this.accepted = 0;
    this.refused = 0;
    this.server = net.createServer((browserSide) => this.accept(browserSide));
  }

  accept(browserSide) {
    this.accepted += 1;
    if (this.refusing) {
      this.refused += 1;
      browserSide.resetAndDestroy();
      return;
    }
    const proxySide = net.connect(this.targetPort, '127.0.0.1');
    const pair = { browserSide, proxySide };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      browserSide.destroy();
      proxySide.destroy();
    };
    for (const socket of [browserSide, proxySide]) {
      socket.on('error', end);
      socket.on('close', end);
    }
    browserSide.pipe(proxySide);
    proxySide.pipe(browserSide);
  }

  /** Resets every open connection, both sides, without a close frame or FIN. */
  cut() {
    for (const { browserSide, proxySide } of this.pairs) {
      browserSide.resetAndDestroy();
      proxySide.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** Open connections stop passing anything, both ways; they stay open. New ones work. */
  freeze() {
    for (const { browserSide, proxySide } of this.pairs) {
      browserSide.unpipe(proxySide);
      proxySide.unpipe(browserSide);
      browserSide.pause();
      proxySide.pause();
    }
    this.frozen = [...this.pairs];
    this.pairs.clear();
  }

  /** While on, new connections are reset as soon as they are accepted. */
  refuse(on) {
    this.refusing = on;
  }

  async stop() {
    this.cut();
    for (const { browserSide, proxySide } of this.frozen || []) {
      browserSide.destroy();
      proxySide.destroy();
    }
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** The proxy certificate's public key hash, the one certificate Chromium is told to accept. */
function proxySpki() {
  const certificate = new crypto.X509Certificate(fs.readFileSync(pki('proxy.pem')));
  const der = certificate.publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(der).digest('base64');
}

/** Debian's Chromium, headless, with a fresh profile, trusting only the proxy's test key. */
export async function launchBrowser() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'consolegate-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false,
    viewport: { width: 800, height: 560 },
    args: [
      '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
      `--ignore-certificate-errors-spki-list=${proxySpki()}`,
    ],
  });
  context.profile = profile;
  return context;
}

export async function closeBrowser(context) {
  await context.close();
  fs.rmSync(context.profile, { recursive: true, force: true });
}

/**
 * A page that records what the test must check: WebSocket handshakes as Chromium saw them on
 * the wire (via the DevTools protocol), console errors and page errors.
 */
export async function openPage(context) {
  const page = await context.newPage();
  const record = { sockets: [], handshakes: [], responses: [], frames: [], errors: [] };
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketCreated', (event) => {
    record.sockets.push({ id: event.requestId, url: event.url, at: Date.now() });
  });
  // Data frames (opcode 1 text, 2 binary) as Chromium sent and received them.
  for (const [name, direction] of [['Network.webSocketFrameSent', 'sent'], ['Network.webSocketFrameReceived', 'received']]) {
    cdp.on(name, (event) => {
      record.frames.push({ id: event.requestId, direction, opcode: event.response.opcode, at: Date.now(),
        text: event.response.opcode === 1 ? event.response.payloadData : null });
    });
  }
  cdp.on('Network.webSocketWillSendHandshakeRequest', (event) => {
    record.handshakes.push({ id: event.requestId, headers: lowerKeys(event.request.headers) });
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (event) => {
    record.responses.push({
      id: event.requestId,
      status: event.response.status,
      headers: lowerKeys(event.response.headers),
    });
  });
  page.on('console', (message) => {
    if (message.type() === 'error') {
      record.errors.push(message.text());
    }
  });
  page.on('pageerror', (error) => record.errors.push(String(error)));
  page.record = record;
  return page;
}

/** Opens the console page for `consoleTicket` at `origin` and waits for the password prompt. */
export async function openConsole(context, origin, consoleTicket) {
  const page = await openPage(context);
  await page.goto(`${origin}/console.html#${consoleTicket}`);
  await page.waitForSelector('body[data-state="password"]', { timeout: 15000 });
  return page;
}

export async function enterPassword(page, password) {
  await page.fill('#password', password);
  await page.click('#password-form button');
}

/** What the page tells the user: its state and status line. */
export async function pageState(page) {
  return page.evaluate(() => ({ state: document.body.dataset.state, status: document.getElementById('status').textContent }));
}

/**
 * Records every change of the page's state from now on (with the page's clock), so that
 * states too short for polling are seen: `page.evaluate(() => window.stateLog)`.
 */
export async function recordStates(page) {
  await page.evaluate(() => {
    window.stateLog = [{ state: document.body.dataset.state, at: performance.now() }];
    new MutationObserver(() => {
      window.stateLog.push({ state: document.body.dataset.state, status: document.getElementById('status').textContent, at: performance.now() });
    }).observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
  });
}

function lowerKeys(headers) {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

/** `#rrggbb` to [r, g, b]. */
export function rgb(colour) {
  const n = Number.parseInt(colour.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/**
 * The colours at a grid of points of noVNC's canvas, read from the framebuffer it drew, with
 * the canvas size.
 */
export async function canvasSample(page, selector = '#screen canvas') {
  return page.evaluate((sel) => {
    const canvas = document.querySelector(sel);
    if (!canvas || canvas.width === 0) {
      return null;
    }
    const ctx = canvas.getContext('2d');
    const points = [];
    for (const fx of [0.05, 0.5, 0.95]) {
      for (const fy of [0.05, 0.5, 0.95]) {
        const x = Math.floor(canvas.width * fx);
        const y = Math.floor(canvas.height * fy);
        points.push(Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
      }
    }
    return { width: canvas.width, height: canvas.height, points };
  }, selector);
}

/** Waits until every sampled point of the canvas has exactly `colour`; returns the sample. */
export async function waitForCanvasColour(page, colour, selector) {
  const want = rgb(colour).join(',');
  let last = null;
  try {
    return await waitFor(`canvas to show ${colour}`, async () => {
      last = await canvasSample(page, selector);
      return last && last.points.every((p) => p.join(',') === want) ? last : null;
    });
  } catch (error) {
    throw new Error(`${error.message}; last sample ${JSON.stringify(last)}`);
  }
}

export function screenshotPath(name) {
  fs.mkdirSync(artifacts, { recursive: true });
  return path.join(artifacts, `${name}.png`);
}
