// What a console user sees when the network misbehaves (issue 7), in Debian's Chromium with
// the console page and noVNC, through the consolegate binary, to real TigerVNC servers. A TCP
// relay stands for the network between the browser and the proxy: the tests cut it, freeze
// it, or make it refuse connections, and check that the page re-attaches without a new ticket
// while noVNC carries on (its canvas follows the VNC server's picture afterwards), that the
// VNC server never notices, that a re-attach after the grace period is refused with the
// proxy's reason, and that heartbeats keep an idle console open.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Proxy, Relay, Xvnc, closeBrowser, enterPassword, launchBrowser, openConsole, pageState,
  recordStates, screenshotPath, ticket, waitFor, waitForCanvasColour,
} from './harness.js';

const TEAL = '#008080';
const CRIMSON = '#dc143c';
const GOLD = '#ffd700';
const NAVY = '#000080';
const OLIVE = '#808000';
const SALMON = '#fa8072';

let browser;
const started = []; // everything to stop afterwards

async function startAll(...starting) {
  const parts = await Promise.all(starting);
  started.push(...parts);
  return parts;
}

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await Promise.allSettled([browser && closeBrowser(browser), ...started.map((part) => part.stop())]);
});

/** A connected console at `origin`, showing `vnc`'s colour, its state changes recorded. */
async function connectedConsole(origin, vnc) {
  const page = await openConsole(browser, origin, ticket(vnc.port));
  await enterPassword(page, vnc.password);
  await page.waitForSelector('body[data-state="connected"]', { timeout: 15000 });
  await waitForCanvasColour(page, vnc.colour);
  await recordStates(page);
  return page;
}

/** The page's state changes since recordStates, consecutive repeats merged. */
async function stateChanges(page) {
  const log = await page.evaluate(() => window.stateLog);
  return log.filter((entry, i) => i === 0 || entry.state !== log[i - 1].state);
}

/** WebSockets the page opened to the re-attach address. */
function resumeSockets(page) {
  return page.record.sockets.filter((s) => s.url.endsWith('/.consolegate/resume'));
}

describe('reconnects (RECONNECT_GRACE_PERIOD): the page re-attaches without a new ticket', () => {
  let vnc;
  let proxy;
  let relay;

  before(async () => {
    [vnc, proxy] = await startAll(
      Xvnc.start({ name: 'reattach', colour: TEAL }),
      Proxy.start('reattach', 'RECONNECT_GRACE_PERIOD=30'),
    );
    [relay] = await startAll(Relay.start(Number(new URL(proxy.origin).port)));
  });

  test('a cut connection: the page re-attaches, noVNC carries on, the VNC server never notices', async (t) => {
    const page = await connectedConsole(relay.origin, vnc);
    const first = page.record.handshakes[0];
    assert.equal(first.headers['sec-websocket-protocol'], 'consolegate.v1, binary');
    assert.equal(page.record.responses[0].headers['sec-websocket-protocol'], 'consolegate.v1');
    assert.equal(vnc.accepted(), 1);
    await proxy.logLine(/session started.*resumable=true/);

    // Both ways: noVNC's requests reached the VNC server and its updates came back, with
    // acknowledgements in text frames noVNC never saw.
    const acks = await waitFor('the page to acknowledge what it received',
      () => page.record.frames.filter((f) => f.direction === 'sent' && f.opcode === 1));
    assert.ok(acks.every((f) => /^\{"type":"ack","received":\d+\}$/.test(f.text)), JSON.stringify(acks));
    const controls = page.record.frames.filter((f) => f.direction === 'received' && f.opcode === 1);
    assert.match(controls[0].text, /^\{"grace":30,"heartbeat":20,"resume":"[A-Za-z0-9_-]{43}","type":"session"\}$/,
      'the first frame: the session message');

    const cutAt = Date.now();
    relay.cut();
    await waitFor('the page to be back', async () => (await stateChanges(page)).length >= 3);
    const changes = await stateChanges(page);
    assert.deepEqual(changes.map((c) => c.state), ['connected', 'reconnecting', 'connected'],
      'noVNC never saw the drop: the page only said it was reconnecting');
    assert.equal(changes[1].status, 'Connection lost, reconnecting…');
    const pageMillis = Math.round(changes[2].at - changes[1].at);
    await proxy.logLine(/browser re-attached; session continues/);
    const testMillis = Date.now() - cutAt;

    // The framebuffer continues: the VNC server repaints, the canvas follows.
    await vnc.setColour(CRIMSON);
    await waitForCanvasColour(page, CRIMSON);
    await page.screenshot({ path: screenshotPath('reconnect-after-cut') });
    await vnc.setColour(TEAL);
    await waitForCanvasColour(page, TEAL);
    assert.match((await pageState(page)).status, /^Connected to reattach\.$/);

    assert.match(proxy.logs(), /browser connection lost; keeping the console for a re-attach|browser re-attached before its old connection was noticed gone/);
    assert.ok(!/session ended/.test(proxy.logs()), 'the session never ended');
    assert.equal(vnc.accepted(), 1, 'the VNC server saw exactly one connection');
    const resumes = resumeSockets(page);
    assert.ok(resumes.length >= 1 && resumes.every((s) => s.url === `${relay.origin.replace('https', 'wss')}/.consolegate/resume`),
      `re-attached on the same origin: ${JSON.stringify(resumes)}`);
    assert.deepEqual(page.record.errors, [], 'no page errors');
    t.diagnostic(`re-attach after a cut: ${pageMillis} ms in the page (drop noticed to connected again), `
      + `${testMillis} ms from the cut to the proxy's "re-attached" line seen by the test, `
      + `${resumes.length} attempt(s)`);

    await page.close();
    const ended = await proxy.logLine(/session ended/);
    assert.match(ended, /closed_by=client/, 'closing the page ends the session at once');
    await waitFor('the VNC server to see the session end', () => /Connections: closed/.test(vnc.log()));
  });

  test('what the user does while the page re-attaches reaches the VNC server afterwards, once', async () => {
    const page = await connectedConsole(relay.origin, vnc);
    const before = vnc.accepted();
    const pointer = vnc.watchPointer();
    try {
      relay.refuse(true);
      relay.cut();
      await page.waitForSelector('body[data-state="reconnecting"]', { timeout: 5000 });
      const canvas = await page.evaluate(() => {
        const c = document.querySelector('#screen canvas');
        const r = c.getBoundingClientRect();
        return { left: r.left, top: r.top, width: r.width, height: r.height, fbWidth: c.width, fbHeight: c.height };
      });
      const points = [[0.2, 0.3], [0.5, 0.5], [0.8, 0.6]].map(([fx, fy]) => [
        Math.round(canvas.left + canvas.width * fx), Math.round(canvas.top + canvas.height * fy)]);
      for (const [x, y] of points) {
        await page.mouse.move(x, y);
      }
      const [lastX, lastY] = points[points.length - 1];
      const expected = [
        Math.round((lastX - canvas.left) * canvas.fbWidth / canvas.width),
        Math.round((lastY - canvas.top) * canvas.fbHeight / canvas.height),
      ];
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(pointer.motions(), [], 'nothing reaches the VNC server while the network is down');

      relay.refuse(false);
      await page.waitForSelector('body[data-state="connected"]', { timeout: 10000 });
      const motions = await waitFor('the pointer to move on the VNC server', () => {
        const seen = pointer.motions();
        const last = seen[seen.length - 1];
        return last && Math.abs(last[0] - expected[0]) <= 2 && Math.abs(last[1] - expected[1]) <= 2 ? seen : null;
      });
      assert.ok(motions.length >= 1, JSON.stringify(motions));
      await vnc.setColour(CRIMSON);
      await waitForCanvasColour(page, CRIMSON);
      assert.equal(vnc.accepted(), before, 'no new connection to the VNC server');
      assert.ok(!/Connections: closed/.test(vnc.log().split('Connections: accepted').pop()),
        'the RFB stream stayed intact: the VNC server kept the connection');
    } finally {
      relay.refuse(false);
      pointer.stop();
    }
    await page.close();
  });

  test('a connection that goes silent (nothing passes, nothing closes): the page gives up on it and re-attaches', async (t) => {
    const [silentVnc, silentProxy] = await startAll(
      Xvnc.start({ name: 'silent', colour: GOLD }),
      // The page hears from the proxy at least every second; the proxy would wait 20 s.
      Proxy.start('silent', 'RECONNECT_GRACE_PERIOD=30\nHEARTBEAT_INTERVAL=1s\nHEARTBEAT_TIMEOUT=20s'),
    );
    const [silentRelay] = await startAll(Relay.start(Number(new URL(silentProxy.origin).port)));
    const page = await connectedConsole(silentRelay.origin, silentVnc);

    silentRelay.freeze();
    await waitFor('the page to be back', async () => (await stateChanges(page)).length >= 3, { timeout: 20000 });
    const changes = await stateChanges(page);
    assert.deepEqual(changes.map((c) => c.state), ['connected', 'reconnecting', 'connected']);
    const silentFor = Math.round(changes[1].at - changes[0].at);
    assert.ok(silentFor >= 5000, `not before 3 heartbeat intervals (at least 6 s) of silence: ${silentFor} ms`);
    // The proxy had not noticed: the re-attach took the session over from the dead connection.
    await silentProxy.logLine(/browser re-attached before its old connection was noticed gone/);
    await silentProxy.logLine(/browser re-attached; session continues/);
    t.diagnostic(`silent connection: given up after ${silentFor} ms of silence, re-attached in ${Math.round(changes[2].at - changes[1].at)} ms`);

    await silentVnc.setColour(NAVY);
    await waitForCanvasColour(page, NAVY);
    assert.equal(silentVnc.accepted(), 1, 'the VNC server saw exactly one connection');
    assert.ok(!/session ended/.test(silentProxy.logs()), 'the session never ended');
    await page.close();
  });
});

describe('after the grace period, re-attaching is refused and the page says why', () => {
  test('the page shows the proxy\'s reason and stops trying', async () => {
    const [vnc, proxy] = await startAll(
      Xvnc.start({ name: 'window', colour: OLIVE }),
      Proxy.start('window', 'RECONNECT_GRACE_PERIOD=2'),
    );
    const [relay] = await startAll(Relay.start(Number(new URL(proxy.origin).port)));
    const page = await connectedConsole(relay.origin, vnc);

    // The network stays down past the grace period, then comes back.
    relay.refuse(true);
    relay.cut();
    // Meanwhile the page says so, discreetly, and keeps the picture.
    await page.waitForSelector('body[data-state="reconnecting"]', { timeout: 5000 });
    assert.equal((await pageState(page)).status, 'Connection lost, reconnecting…');
    await waitForCanvasColour(page, OLIVE);
    assert.equal(await page.isVisible('#reconnect'), false, 'no Reconnect button while re-attaching');
    await page.screenshot({ path: screenshotPath('reconnecting') });
    const gone = await proxy.logLine(/session ended.*not back within RECONNECT_GRACE_PERIOD/, 10000);
    relay.refuse(false);
    assert.match(gone, /closed_by=client gone/);
    assert.ok(relay.refused > 0, 'the page tried while the network was down');
    await waitFor('the VNC server to see its connection closed', () => /Connections: closed/.test(vnc.log()));

    await page.waitForSelector('body[data-state="failed"]', { timeout: 15000 });
    const { status } = await pageState(page);
    assert.match(status, /^The console session ended: console session cannot be resumed - open the console again from the portal \(ref ([0-9a-f]{8})\)\. \(close 4403\)$/);
    const ref = status.match(/ref ([0-9a-f]{8})/)[1];
    const refusal = await proxy.logLine(/refused: resume/);
    assert.match(refusal, new RegExp(`request_id=${ref}`), 'the page\'s reference finds the log line');
    assert.match(refusal, /no session waits under this resume secret/);
    await page.screenshot({ path: screenshotPath('reconnect-refused-after-window') });

    // It does not loop: no attempt after the refusal.
    const attempts = resumeSockets(page).length;
    assert.ok(attempts >= 2 && attempts <= 12, `a bounded number of attempts: ${attempts}`);
    const accepted = relay.accepted;
    await new Promise((resolve) => setTimeout(resolve, 3000)); // longer than any retry delay
    assert.equal(resumeSockets(page).length, attempts, 'no attempt after the refusal');
    assert.equal(relay.accepted, accepted, 'no connection after the refusal');
    assert.equal(vnc.accepted(), 1);
    assert.equal(await page.isVisible('#reconnect'), true, 'the Reconnect button is offered');
    await page.close();
  });
});

describe('heartbeats in a real browser (HEARTBEAT_INTERVAL=1s, HEARTBEAT_TIMEOUT=3s)', () => {
  let vnc;
  let proxy;
  let resumableProxy;

  before(async () => {
    [vnc, proxy, resumableProxy] = await startAll(
      Xvnc.start({ name: 'idle', colour: SALMON }),
      Proxy.start('heartbeat', 'HEARTBEAT_INTERVAL=1s\nHEARTBEAT_TIMEOUT=3s'),
      Proxy.start('heartbeat-resumable', 'HEARTBEAT_INTERVAL=1s\nHEARTBEAT_TIMEOUT=3s\nRECONNECT_GRACE_PERIOD=30'),
    );
  });

  test('idle consoles stay open: Chromium answers the pings, the page does not take silence for a drop', async () => {
    const [plain, resumable] = await Promise.all([
      connectedConsole(proxy.origin, vnc),
      connectedConsole(resumableProxy.origin, vnc),
    ]);
    assert.equal(plain.record.responses[0].headers['sec-websocket-protocol'], 'binary', 'reconnects off: plain binary');
    assert.equal(resumable.record.responses[0].headers['sec-websocket-protocol'], 'consolegate.v1');
    // Let the last acknowledgements go, then idle: nobody touches the consoles and the picture
    // does not change, for more than twice HEARTBEAT_TIMEOUT (and more than the page's own
    // 6 s silence limit). Without pongs the proxy would end each session after 3 s.
    await new Promise((resolve) => setTimeout(resolve, 600));
    const quietFrom = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 7000));
    const since = (page) => page.record.frames.filter((f) => f.at >= quietFrom);
    assert.deepEqual(since(plain), [], 'plain binary: no data frame either way while idle');
    const controls = since(resumable);
    assert.ok(controls.every((f) => f.direction === 'received' && /^\{"received":\d+,"type":"ack"\}$/.test(f.text)),
      `consolegate.v1: only the proxy's acknowledgements that come with its pings: ${JSON.stringify(controls)}`);
    assert.ok(controls.length >= 3, `one per heartbeat interval: ${controls.length}`);
    for (const [page, via] of [[plain, proxy], [resumable, resumableProxy]]) {
      assert.ok(!/session ended/.test(via.logs()), `the session is still open: ${via.logs().split('\n').filter((l) => /session/.test(l)).join('\n')}`);
      assert.deepEqual((await stateChanges(page)).map((c) => c.state), ['connected'], 'the page never left "connected"');
    }
    assert.ok(!/re-attach/.test(resumableProxy.logs()), 'no re-attach happened');

    await vnc.setColour(TEAL);
    await Promise.all([waitForCanvasColour(plain, TEAL), waitForCanvasColour(resumable, TEAL)]);
    await Promise.all([plain.close(), resumable.close()]);
    assert.match(await proxy.logLine(/session ended/), /closed_by=client/);
    assert.match(await resumableProxy.logLine(/session ended/), /closed_by=client/);
  });

  test('a browser whose connection went silent is ended within HEARTBEAT_TIMEOUT', async (t) => {
    const [relay] = await startAll(Relay.start(Number(new URL(proxy.origin).port)));
    const before = proxy.logs().split('\n').filter((l) => /session ended/.test(l)).length;
    const page = await connectedConsole(relay.origin, vnc);
    const frozenAt = Date.now();
    relay.freeze();
    await waitFor('the proxy to end the silent session', () => {
      const ended = proxy.logs().split('\n').filter((l) => /session ended/.test(l));
      return ended.length > before ? ended[ended.length - 1] : null;
    }, { timeout: 10000 }).then((line) => {
      assert.match(line, /closed_by=proxy \(client stopped answering heartbeats\)/);
    });
    const took = Date.now() - frozenAt;
    // The last pong came at most one interval before the freeze; the summary line comes after
    // the proxy's close frame has waited 2 s for an answer; 2 s more for a busy machine.
    assert.ok(took < 3000 + 2000 + 2000, `ended within HEARTBEAT_TIMEOUT: ${took} ms`);
    t.diagnostic(`silent browser ended by the proxy ${took} ms after its connection froze`);
    await page.close();
  });
});
