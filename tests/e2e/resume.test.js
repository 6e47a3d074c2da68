// Unit tests for the pure parts of the console page's reconnect module (web/resume.js): the
// control messages, the page's kept stream bytes, which closes end a session, the retry and
// silence timings. The channel itself runs in Chromium against the proxy in
// reconnect.test.js.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ACK_EVERY_BYTES, SentBytes, isDeliberateClose, parseControl, resumeUrlFor, retryDelay,
  silenceLimitMs,
} from '../../web/resume.js';

test('control messages from the proxy are parsed, anything else is null', () => {
  assert.deepEqual(parseControl('{"type":"session","resume":"abc","grace":30,"heartbeat":20}'),
    { type: 'session', resume: 'abc', grace: 30, heartbeat: 20 });
  assert.deepEqual(parseControl('{"type":"session","resume":"abc","grace":30}'),
    { type: 'session', resume: 'abc', grace: 30, heartbeat: 0 }, 'a proxy without heartbeats in the message');
  assert.deepEqual(parseControl('{"type":"ack","received":70000}'), { type: 'ack', received: 70000 });
  assert.deepEqual(parseControl('{"type":"resumed","resume":"new","received":12}'),
    { type: 'resumed', resume: 'new', received: 12 });
  for (const junk of ['', 'null', '[]', '"ack"', '{}', '{"type":"ack"}', '{"type":"ack","received":-1}',
    '{"type":"ack","received":1.5}', '{"type":"ack","received":"7"}', '{"type":"session","grace":30}',
    '{"type":"resumed","resume":5,"received":1}', '{"type":"later-version"}', 'RFB 003.008\n']) {
    assert.equal(parseControl(junk), null, junk);
  }
});

test('kept bytes are copied, trimmed by acknowledgements and sent again from any offset', () => {
  const sent = new SentBytes();
  const buffer = new Uint8Array([1, 2, 3, 4]);
  sent.keep(buffer);
  buffer.fill(9); // noVNC reuses its send buffer
  sent.keep(new Uint8Array([5, 6, 7]));
  const joined = (chunks) => Array.from(chunks.flatMap((c) => Array.from(c)));
  assert.deepEqual(joined(sent.from(0)), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(joined(sent.from(5)), [6, 7]);
  assert.deepEqual(joined(sent.from(7)), []);
  assert.equal(sent.kept, 7);
  sent.ack(2);
  assert.deepEqual([sent.start, sent.end, sent.kept], [2, 7, 5]);
  assert.deepEqual(joined(sent.from(2)), [3, 4, 5, 6, 7]);
  assert.throws(() => sent.from(1), RangeError, 'acknowledged bytes are gone');
  assert.throws(() => sent.from(8), RangeError, 'the proxy cannot have more than was sent');
  sent.ack(1); // late, out of order
  assert.equal(sent.start, 2);
  sent.ack(100); // more than was sent: capped
  assert.deepEqual([sent.start, sent.kept], [7, 0]);
  sent.keep(new Uint8Array([8]));
  assert.deepEqual(joined(sent.from(7)), [8]);
  sent.clear();
  assert.deepEqual([sent.start, sent.end, sent.kept], [8, 8, 0]);
});

test('a close with a code from the proxy ends the session; a cut connection does not', () => {
  for (const code of [1000, 1001, 1011, 4401, 4403, 4409, 4502]) {
    assert.ok(isDeliberateClose({ code, wasClean: true }), String(code));
  }
  assert.ok(!isDeliberateClose({ code: 1006, wasClean: false }));
  assert.ok(!isDeliberateClose({ code: 1005, wasClean: true }), 'a close frame without a code');
  assert.ok(!isDeliberateClose({ code: 1000, wasClean: false }));
});

test('re-attach attempts: at once, then backing off to 2 s, spread by at most 20 %', () => {
  assert.equal(retryDelay(0), 0);
  assert.deepEqual([1, 2, 3, 4, 5, 50].map((n) => retryDelay(n, () => 0.5)), [250, 500, 1000, 2000, 2000, 2000]);
  assert.equal(retryDelay(1, () => 0), 200);
  assert.equal(retryDelay(4, () => 0.999999), 2400);
});

test('silence: three heartbeat intervals, at least one plus 5 s; never without heartbeats', () => {
  assert.equal(silenceLimitMs(20), 60000);
  assert.equal(silenceLimitMs(1), 6000);
  assert.equal(silenceLimitMs(0), null);
  assert.equal(silenceLimitMs(undefined), null);
});

test('the re-attach address is the console address\'s origin', () => {
  assert.equal(resumeUrlFor('wss://proxy.example:6100/eyJzYWx0?x=1#y'), 'wss://proxy.example:6100/.consolegate/resume');
  assert.equal(resumeUrlFor('ws://127.0.0.1:8080/t'), 'ws://127.0.0.1:8080/.consolegate/resume');
  assert.ok(ACK_EVERY_BYTES <= 1024 * 1024, 'acknowledged well before the proxy\'s smallest useful buffer fills');
});
