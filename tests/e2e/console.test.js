// The console as its users see it: Debian's Chromium loads the console page from consolegate,
// noVNC connects over wss:// through the proxy to real TigerVNC servers, and the tests check
// the picture on noVNC's canvas, what the page tells the user, what went over the wire, what
// the proxy logged, and what the VNC servers saw.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Proxy, Xvnc, closeBrowser, enterPassword, freePort, launchBrowser, openConsole as openConsoleAt,
  openPage, pageState as state, pki, screenshotPath, ticket, waitForCanvasColour, rgb,
} from './harness.js';

const BLUE = '#1e90ff';
const ORANGE = '#ff8c00';
const GREEN = '#2e8b57';
const PURPLE = '#8a2be2';

let plainVnc; // VncAuth
let tlsVnc; // VeNCrypt X509Vnc, certificate from the test CA naming 127.0.0.1
let otherCaVnc; // VeNCrypt X509Vnc, certificate from an unrelated CA
let proxy; // no certificate verification towards VNC servers, as upstream
let verifyingProxy; // SSL_TARGET_CA = the test CA
let httpRefusingProxy; // REFUSE_WITH_HTTP_STATUS=True, as upstream
let browser;

before(async () => {
  [plainVnc, tlsVnc, otherCaVnc] = await Promise.all([
    Xvnc.start({ name: 'plain', colour: BLUE }),
    Xvnc.start({ name: 'x509', colour: ORANGE, security: 'X509Vnc', cert: pki('vnc.pem'), key: pki('vnc.key') }),
    Xvnc.start({ name: 'otherca', colour: GREEN, security: 'X509Vnc', cert: pki('vnc-other-ca.pem'), key: pki('vnc-other-ca.key') }),
  ]);
  [proxy, verifyingProxy, httpRefusingProxy] = await Promise.all([
    Proxy.start('plain'),
    Proxy.start('verifying', `SSL_TARGET_CA=${pki('ca.pem')}`),
    Proxy.start('http-refusing', 'REFUSE_WITH_HTTP_STATUS=True'),
  ]);
  browser = await launchBrowser();
});

after(async () => {
  await Promise.allSettled([
    browser && closeBrowser(browser),
    ...[proxy, verifyingProxy, httpRefusingProxy, plainVnc, tlsVnc, otherCaVnc].filter(Boolean).map((p) => p.stop()),
  ]);
});

/** Opens the console page for `consoleTicket` on `via` and waits for the password prompt. */
function openConsole(via, consoleTicket) {
  return openConsoleAt(browser, via.origin, consoleTicket);
}

/** The one WebSocket handshake a page made, as sent and as answered. */
function onlyHandshake(page) {
  const { handshakes, responses } = page.record;
  assert.equal(handshakes.length, 1, `one WebSocket: ${JSON.stringify(handshakes)}`);
  const response = responses.find((r) => r.id === handshakes[0].id);
  return { request: handshakes[0].headers, response };
}

function assertNoTicketIn(logs, consoleTicket) {
  assert.ok(!logs.includes(consoleTicket.slice(0, 64)), 'the proxy log never holds a ticket');
}

describe('the console page', () => {
  test('shows a VNC server\'s picture over wss:// after the VNC password, and follows changes', async () => {
    const consoleTicket = ticket(plainVnc.port);
    const page = await openConsole(proxy, consoleTicket);
    assert.ok(!page.url().includes('#'), 'the ticket is taken off the address bar');
    await enterPassword(page, plainVnc.password);
    await page.waitForSelector('body[data-state="connected"]', { timeout: 15000 });
    const sample = await waitForCanvasColour(page, BLUE);
    assert.deepEqual([sample.width, sample.height], [640, 400], 'the canvas is the server\'s screen');
    assert.match((await state(page)).status, /Connected to plain/);
    await page.screenshot({ path: screenshotPath('console-vnc-password') });

    // The picture is live: the server repaints, the canvas follows.
    await plainVnc.setColour(PURPLE);
    await waitForCanvasColour(page, PURPLE);
    await plainVnc.setColour(BLUE);
    await waitForCanvasColour(page, BLUE);

    const { request, response } = onlyHandshake(page);
    assert.equal(request['sec-websocket-protocol'], 'consolegate.v1, binary', 'the page offers reconnects, then "binary"');
    assert.equal(response.status, 101);
    assert.equal(response.headers['sec-websocket-protocol'], 'binary', 'reconnects are off: plain "binary"');
    assert.ok(page.record.frames.every((f) => f.opcode === 2), 'binary frames only, as with a plain WebSocket');
    assert.deepEqual(page.record.errors, [], 'no page errors and no CSP violations');

    await page.close();
    const ended = await proxy.logLine(/session ended.*closed_by=client/);
    const toClient = Number(ended.match(/bytes_to_client=(\d+)/)[1]);
    assert.ok(toClient > 100, `framebuffer updates went through (${toClient} bytes)`);
    assertNoTicketIn(proxy.logs(), consoleTicket);
  });

  test('a wrong VNC password is refused by the VNC server and the page says so', async () => {
    const page = await openConsole(proxy, ticket(plainVnc.port));
    await enterPassword(page, 'not-the-password');
    await page.waitForSelector('body[data-state="failed"]', { timeout: 15000 });
    const { status } = await state(page);
    assert.match(status, /The connection was refused: Authentication fail/i);
    await page.close();
  });

  // Each refusal: the proxy's own words inside noVNC's page, the code, and a reference that
  // finds the proxy's log line; no connection reaches any VNC server.
  for (const [label, makeTicket, code, reason, logged] of [
    ['a forged ticket', () => ticket(plainVnc.port, { signer: 'other-engine' }), 4403,
      'console link is not valid - open the console again from the portal', /refused: ticket.*signature does not verify/],
    ['an expired ticket', () => ticket(plainVnc.port, { now: new Date(Date.now() - 3600 * 1000), lifetime: 60 }), 4401,
      'console link expired - open the console again from the portal', /refused: ticket.*ticket expired/],
    ['a ticket for an unreachable VNC server', async () => ticket(await freePort()), 4502,
      'the virtual machine\'s console is not reachable - is the VM running?', /refused: target unreachable/],
  ]) {
    test(`${label}: the page shows the proxy's reason (close ${code}) and no VNC server sees a connection`, async () => {
      const before = plainVnc.accepted();
      const refused = await makeTicket();
      const page = await openPage(browser);
      await page.goto(`${proxy.origin}/console.html#${refused}`);
      await page.waitForSelector('body[data-state="failed"]', { timeout: 15000 });
      const { status } = await state(page);
      const escaped = reason.replace(/[.?()]/g, '\\$&');
      assert.match(status, new RegExp(`^The console could not be opened: ${escaped} \\(ref [0-9a-f]{8}\\)\\. \\(close ${code}\\)$`));
      const visible = await page.innerText('body');
      assert.ok(visible.includes(reason), `the reason is on the page: ${visible}`);
      await page.screenshot({ path: screenshotPath(`console-refused-${code}`) });

      const { response } = onlyHandshake(page);
      assert.equal(response.status, 101, 'upgraded only to be closed with a reason');
      const ref = status.match(/ref ([0-9a-f]{8})/)[1];
      const line = await proxy.logLine(new RegExp(`request_id=${ref}.*refused|refused.*request_id=${ref}`));
      assert.match(line, logged, 'the page\'s reference finds the log line that says why');
      assertNoTicketIn(proxy.logs(), refused);
      assert.equal(plainVnc.accepted(), before, 'no connection reached the VNC server');
      await page.close();
    });
  }

  test('a refused ticket with REFUSE_WITH_HTTP_STATUS: 403 before the upgrade, the page still explains', async () => {
    const before = plainVnc.accepted();
    const page = await openPage(browser);
    await page.goto(`${httpRefusingProxy.origin}/console.html#${ticket(plainVnc.port, { signer: 'other-engine' })}`);
    await page.waitForSelector('body[data-state="failed"]', { timeout: 15000 });
    assert.match((await state(page)).status, /the ticket was refused \(it may have expired\)/);
    const { response } = onlyHandshake(page);
    assert.equal(response?.status ?? 403, 403);
    await httpRefusingProxy.logLine(/refused: ticket/);
    assert.equal(plainVnc.accepted(), before, 'no connection reached the VNC server');
    await page.close();
  });

  test('without a ticket the page says where to get one', async () => {
    const page = await openPage(browser);
    await page.goto(`${proxy.origin}/console.html`);
    await page.waitForSelector('body[data-state="failed"]');
    assert.match((await state(page)).status, /no console ticket/);
    assert.equal(page.record.handshakes.length, 0, 'no WebSocket was opened');
    await page.close();
  });
});

describe('encrypted VNC servers (VeNCrypt X509Vnc, ssl_target tickets)', () => {
  test('the proxy negotiates TLS with the server and the console shows its picture', async () => {
    const page = await openConsole(proxy, ticket(tlsVnc.port, { sslTarget: true }));
    await enterPassword(page, tlsVnc.password);
    await page.waitForSelector('body[data-state="connected"]', { timeout: 15000 });
    await waitForCanvasColour(page, ORANGE);
    await page.screenshot({ path: screenshotPath('console-vencrypt-x509vnc') });
    assert.deepEqual(page.record.errors, []);
    await page.close();
    const line = await proxy.logLine(/VeNCrypt X509VNC negotiated/);
    assert.match(line, /verification=off/);
  });

  test('the VNC password challenge goes end to end through the TLS session', async () => {
    const page = await openConsole(proxy, ticket(tlsVnc.port, { sslTarget: true }));
    await enterPassword(page, 'not-the-password');
    await page.waitForSelector('body[data-state="failed"]', { timeout: 15000 });
    assert.match((await state(page)).status, /Authentication fail/i);
    await page.close();
  });

  test('with SSL_TARGET_CA, a server certified by that CA is reached', async () => {
    const page = await openConsole(verifyingProxy, ticket(tlsVnc.port, { sslTarget: true }));
    await enterPassword(page, tlsVnc.password);
    await page.waitForSelector('body[data-state="connected"]', { timeout: 15000 });
    await waitForCanvasColour(page, ORANGE);
    await page.close();
    const line = await verifyingProxy.logLine(/VeNCrypt X509VNC negotiated/);
    assert.match(line, /verification=chain to .*ca\.pem and name the host/);
  });

  test('with SSL_TARGET_CA, a server certificate from another CA is refused with 1011', async () => {
    const page = await openPage(browser);
    await page.goto(`${verifyingProxy.origin}/console.html#${ticket(otherCaVnc.port, { sslTarget: true })}`);
    await page.waitForSelector('body[data-state="failed"]', { timeout: 15000 });
    const { status } = await state(page);
    assert.match(status, /could not set up encryption with the VM's host/);
    assert.match(status, /close 1011: VNC encryption negotiation failed/);
    await page.screenshot({ path: screenshotPath('console-vencrypt-wrong-ca') });
    const ref = status.match(/\(ref ([0-9a-f]{8})\)/)[1];
    const line = await verifyingProxy.logLine(/VeNCrypt negotiation failed/);
    assert.match(line, new RegExp(`request_id=${ref}`), 'the page\'s reference finds the log line');
    assert.match(line, /step="?tls_handshake/);
    assert.match(line, /UnknownIssuer/);
    const ended = await verifyingProxy.logLine(/session ended.*VeNCrypt negotiation failed/);
    assert.match(ended, /close 1011/);
    await page.close();
  });

  test('without SSL_TARGET_CA the same server is reached, as upstream does', async () => {
    const page = await openConsole(proxy, ticket(otherCaVnc.port, { sslTarget: true }));
    await enterPassword(page, otherCaVnc.password);
    await page.waitForSelector('body[data-state="connected"]', { timeout: 15000 });
    await waitForCanvasColour(page, GREEN);
    await page.close();
  });
});

describe('noVNC used directly, as portals embed it', () => {
  for (const [label, options, offered] of [
    ['noVNC\'s default: no subprotocol', {}, undefined],
    ['wsProtocols: [\'binary\'], as oVirt\'s admin portal sends', { wsProtocols: ['binary'] }, 'binary'],
  ]) {
    test(label, async () => {
      const page = await openPage(browser);
      await page.goto(`${proxy.origin}/console.html`); // no ticket: the page stays idle
      const url = `${proxy.origin.replace('https', 'wss')}/${ticket(plainVnc.port)}`;
      await page.evaluate(async ({ url, options, password }) => {
        const { default: RFB } = await import('/novnc/core/rfb.js');
        const target = document.createElement('div');
        target.id = 'direct';
        document.body.append(target);
        await new Promise((resolve, reject) => {
          const rfb = new RFB(target, url, { ...options, credentials: { password } });
          rfb.addEventListener('connect', resolve);
          rfb.addEventListener('disconnect', () => reject(new Error('disconnected')));
        });
      }, { url, options, password: plainVnc.password });
      await waitForCanvasColour(page, BLUE, '#direct canvas');
      const { request, response } = onlyHandshake(page);
      assert.equal(request['sec-websocket-protocol'], offered);
      assert.equal(response.status, 101);
      assert.equal(response.headers['sec-websocket-protocol'], offered);
      await page.close();
    });
  }
});

test('colours are compared exactly', () => {
  assert.deepEqual(rgb(BLUE), [30, 144, 255]);
});
