// Reconnects for the console page: a WebSocket-like channel that noVNC uses instead of a
// WebSocket, and that survives a dropped connection (a Wi-Fi or VPN blip) by re-attaching to
// the same console session without a new ticket. noVNC never sees the drop.
//
// The protocol is consolegate's `consolegate.v1` (README "Reconnects"; src/resume.rs):
//
// - The page offers the subprotocols ['consolegate.v1', 'binary']. A proxy with reconnects
//   off (RECONNECT_GRACE_PERIOD=0), or any other server, answers 'binary', and this channel
//   then passes everything through untouched: it behaves exactly as the plain WebSocket.
// - With 'consolegate.v1', binary frames carry the RFB stream as with 'binary'; text frames
//   carry JSON control messages, which noVNC never sees:
//     proxy -> page, first:  {"type":"session","resume":SECRET,"grace":SECONDS,"heartbeat":SECONDS}
//     both ways:             {"type":"ack","received":N}   N stream bytes received so far
//     page -> proxy, on wss://<origin>/.consolegate/resume:
//                            {"type":"resume","resume":SECRET,"received":N}
//     proxy -> page:         {"type":"resumed","resume":NEW_SECRET,"received":M}
//   after which the proxy resends its stream from byte N and the page its own from byte M.
// - The page acknowledges what it received (every ACK_EVERY_BYTES, or ACK_DELAY_MS after the
//   first unacknowledged byte), and keeps what noVNC sent until the proxy acknowledges it.
// - A close the proxy chose (a close frame with a code: "Target closed", a refusal, shutdown)
//   is passed to noVNC. Any other end of the connection (1006: no close frame; or nothing at
//   all heard for several heartbeat intervals) starts re-attaching: immediately, then with
//   backoff, until the grace period announced in the session message (plus a margin, since
//   the proxy may notice the drop later than the page) has passed. The last attempt is made
//   at the end of that window, so that a proxy that can be reached says itself why the
//   session cannot continue. A refusal of the re-attach (4403: wrong, used or expired secret;
//   4409: the stream cannot continue) ends the channel with the proxy's code and reason, as
//   any other refusal, and no further attempt is made.
//
// Events beyond a WebSocket's, for the page: 'session' (detail: {grace, heartbeat}, seconds),
// 'resuming' (detail: {code, deadline}: the connection was lost at `code`, attempts run until
// `deadline`, a performance.now() time), 'resumed' (detail: {attempts, millis}).

export const PROTOCOL = 'consolegate.v1';
export const RESUME_PATH = '/.consolegate/resume';

/** Stream bytes received between two acknowledgements, at most. */
export const ACK_EVERY_BYTES = 64 * 1024;
/** How long a received byte waits for its acknowledgement, at most. */
export const ACK_DELAY_MS = 500;
/** How long one re-attach attempt may take to open and be answered. */
export const ATTEMPT_TIMEOUT_MS = 5000;
/**
 * How long after the announced grace period the page still tries: the proxy's window starts
 * when the proxy notices the drop, which may be after the page did.
 */
export const WINDOW_MARGIN_MS = 2000;
/**
 * Bytes sent and not yet acknowledged beyond which the page stops keeping them (and so gives
 * up resuming): the proxy acknowledges at least every 32 KiB and at every heartbeat, so only
 * a proxy that does not acknowledge at all gets there.
 */
export const KEEP_LIMIT_BYTES = 16 * 1024 * 1024;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/**
 * The wait before re-attach attempt `attempt` (0 = the first, at once): 0, 250, 500, 1000 ms,
 * then 2000 ms, each but the first spread by up to ±20 % (`random` in [0, 1)) so that the
 * consoles of many pages behind one failed link do not come back in lockstep.
 */
export function retryDelay(attempt, random = Math.random) {
  if (attempt <= 0) {
    return 0;
  }
  const base = Math.min(250 * 2 ** (attempt - 1), 2000);
  return Math.round(base * (0.8 + 0.4 * random()));
}

/**
 * Whether a close ends the session rather than interrupting it: the proxy sent a close frame
 * with a code (1000 "Target closed", 1001 shutdown, 1011, 4xxx refusals...). A connection that
 * ended without one (1006) or with an empty one (1005) was cut on the way.
 */
export function isDeliberateClose({ code, wasClean }) {
  return Boolean(wasClean) && code !== 1005 && code !== 1006;
}

/**
 * How long nothing at all may be heard from the proxy before the connection counts as gone,
 * given its heartbeat interval in seconds (0: off, the page never gives up on silence). The
 * proxy pings, and in `consolegate.v1` acknowledges, after each interval without traffic.
 */
export function silenceLimitMs(heartbeatSecs) {
  if (!(heartbeatSecs > 0)) {
    return null;
  }
  return Math.max(3 * heartbeatSecs * 1000, heartbeatSecs * 1000 + 5000);
}

/** A control message from the proxy, or null for anything else. */
export function parseControl(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return null;
  }
  if (message === null || typeof message !== 'object' || typeof message.type !== 'string') {
    return null;
  }
  const count = (value) => Number.isSafeInteger(value) && value >= 0;
  switch (message.type) {
    case 'session':
      return typeof message.resume === 'string' && count(message.grace)
        ? { type: 'session', resume: message.resume, grace: message.grace,
          heartbeat: count(message.heartbeat) ? message.heartbeat : 0 }
        : null;
    case 'ack':
      return count(message.received) ? { type: 'ack', received: message.received } : null;
    case 'resumed':
      return typeof message.resume === 'string' && count(message.received)
        ? { type: 'resumed', resume: message.resume, received: message.received }
        : null;
    default:
      return null;
  }
}

/**
 * The page's own stream bytes from the first one the proxy has not acknowledged: what a
 * re-attach may have to send again. Copies what it keeps (noVNC reuses its send buffer).
 */
export class SentBytes {
  constructor() {
    this.chunks = [];
    /** Stream offset of the first kept byte: what the proxy acknowledged. */
    this.start = 0;
    /** Stream bytes sent in all. */
    this.end = 0;
  }

  get kept() {
    return this.end - this.start;
  }

  /** Keeps a copy of `bytes` (a Uint8Array) and returns it. */
  keep(bytes) {
    const copy = bytes.slice();
    this.chunks.push(copy);
    this.end += copy.length;
    return copy;
  }

  /** Forgets everything before stream offset `received`; late acknowledgements change nothing. */
  ack(received) {
    let forget = Math.min(received, this.end) - this.start;
    while (forget > 0 && this.chunks.length > 0) {
      const first = this.chunks[0];
      if (first.length <= forget) {
        this.chunks.shift();
        forget -= first.length;
        this.start += first.length;
      } else {
        this.chunks[0] = first.subarray(forget);
        this.start += forget;
        forget = 0;
      }
    }
  }

  /**
   * The bytes from stream offset `offset` on.
   * @throws {RangeError} when `offset` is before what is kept or after what was sent.
   */
  from(offset) {
    if (offset < this.start || offset > this.end) {
      throw new RangeError(`the proxy has ${offset} bytes of this page's stream; the page can send again from ${this.start} to ${this.end}`);
    }
    let skip = offset - this.start;
    const out = [];
    for (const chunk of this.chunks) {
      if (skip >= chunk.length) {
        skip -= chunk.length;
      } else {
        out.push(skip > 0 ? chunk.subarray(skip) : chunk);
        skip = 0;
      }
    }
    return out;
  }

  /** Forgets everything (the session can no longer be resumed). */
  clear() {
    this.chunks = [];
    this.start = this.end;
  }
}

function toBytes(data) {
  if (data instanceof Uint8Array) {
    return data;
  }
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof ArrayBuffer) {
    return new Uint8Array(data);
  }
  return new TextEncoder().encode(String(data));
}

/** The re-attach address for a console URL: same scheme and host. */
export function resumeUrlFor(url) {
  const resume = new URL(url);
  resume.pathname = RESUME_PATH;
  resume.search = '';
  resume.hash = '';
  return resume.href;
}

/**
 * A WebSocket-like channel for noVNC (`new RFB(target, channel)`) that re-attaches after a
 * drop. It has what noVNC's Websock uses of a WebSocket — binaryType, protocol, readyState,
 * send, close, on{open,message,close,error} — and addEventListener for the page.
 */
export class ResumableSocket extends EventTarget {
  /**
   * @param {string} url  wss://<origin>/<ticket>
   * @param {object} [options]
   * @param {string[]} [options.protocols]  offered subprotocols
   * @param {string} [options.resumeUrl]  where to re-attach (default: /.consolegate/resume on
   *   the same origin)
   * @param {typeof WebSocket} [options.WebSocket]  the WebSocket class
   */
  constructor(url, { protocols = [PROTOCOL, 'binary'], resumeUrl, WebSocket: Impl = globalThis.WebSocket } = {}) {
    super();
    this.url = url;
    this._origin = new URL(url).origin;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this._Impl = Impl;
    this._resumeUrl = resumeUrl || resumeUrlFor(url);
    this._binaryType = 'blob';
    this._readyState = CONNECTING;
    this._protocol = '';
    /** Whether the proxy speaks consolegate.v1 on this channel. */
    this._v1 = false;
    /** The current resume secret, once the session message came; null: cannot resume. */
    this._secret = null;
    this._grace = 0;
    this._silenceLimit = null;
    /** Stream bytes received from the proxy, and how many of them were acknowledged. */
    this._received = 0;
    this._ackedToProxy = 0;
    this._ackTimer = null;
    this._sent = new SentBytes();
    this._lastHeard = 0;
    this._silenceTimer = null;
    /** Set by close(): the page is ending the session. */
    this._closing = false;
    /** While re-attaching: {dropAt, deadline, attempts, timer, cancel, code}. */
    this._resuming = null;
    this._socket = null;
    this._listen(new Impl(url, protocols), true);
  }

  get binaryType() {
    return this._binaryType;
  }

  /** 'arraybuffer' (what noVNC sets) or 'blob'. */
  set binaryType(type) {
    this._binaryType = type;
  }

  get protocol() {
    return this._protocol;
  }

  /** OPEN from the first socket's open until the session ends, re-attaching included. */
  get readyState() {
    return this._readyState;
  }

  get bufferedAmount() {
    return this._socket ? this._socket.bufferedAmount : 0;
  }

  get extensions() {
    return '';
  }

  /** Whether the page is re-attaching now. */
  get resuming() {
    return this._resuming !== null;
  }

  toString() {
    return `ResumableSocket(${this._v1 ? PROTOCOL : this._protocol || 'connecting'})`;
  }

  /** Sends stream bytes; while re-attaching they are kept and sent once re-attached. */
  send(data) {
    if (this._readyState === CONNECTING) {
      throw new DOMException('the console connection is not open yet', 'InvalidStateError');
    }
    if (this._readyState !== OPEN) {
      return;
    }
    if (!this._v1) {
      this._socket.send(data);
      return;
    }
    const bytes = toBytes(data);
    if (this._secret === null) {
      // Not resumable (over the keep limit): nothing to keep.
      if (this._socket) {
        this._socket.send(bytes);
      }
      return;
    }
    const kept = this._sent.keep(bytes);
    if (this._socket) {
      this._socket.send(kept);
    }
    if (this._sent.kept > KEEP_LIMIT_BYTES) {
      console.warn(`consolegate: the proxy acknowledged nothing of the last ${this._sent.kept} bytes; this console can no longer be resumed`);
      this._secret = null;
      this._sent.clear();
      if (this._resuming) {
        this._giveUp();
      }
    }
  }

  /** Ends the session: the proxy gets a close frame and closes the VNC connection. */
  close(code, reason) {
    if (this._readyState === CLOSING || this._readyState === CLOSED) {
      return;
    }
    this._closing = true;
    this._readyState = CLOSING;
    this._stopTimers();
    if (this._socket) {
      // Its close event ends this channel.
      if (code === undefined) {
        this._socket.close();
      } else {
        this._socket.close(code, reason);
      }
      return;
    }
    // Re-attaching: nothing to tell the proxy, whose grace period runs out.
    this._abandonAttempt();
    this._resuming = null;
    setTimeout(() => this._finish({ code: code || 1005, reason: reason || '', wasClean: true }), 0);
  }

  _emit(event) {
    const handler = this[`on${event.type}`];
    if (typeof handler === 'function') {
      handler.call(this, event);
    }
    this.dispatchEvent(event);
  }

  _deliver(data) {
    const payload = this._binaryType === 'blob' && data instanceof ArrayBuffer ? new Blob([data]) : data;
    this._emit(new MessageEvent('message', { data: payload, origin: this._origin }));
  }

  /** Uses `socket` as the connection: the first one (`first`), or a re-attached one. */
  _listen(socket, first) {
    this._socket = socket;
    socket.binaryType = 'arraybuffer';
    if (first) {
      socket.onopen = () => {
        this._protocol = socket.protocol;
        this._v1 = socket.protocol === PROTOCOL;
        this._readyState = this._closing ? CLOSING : OPEN;
        this._heard();
        this._emit(new Event('open'));
      };
    }
    socket.onmessage = (event) => this._onFrame(socket, event.data);
    socket.onerror = () => {};
    socket.onclose = (event) => this._onSocketClose(socket, event);
  }

  _onFrame(socket, data) {
    if (socket !== this._socket) {
      return;
    }
    if (!this._v1) {
      this._deliver(data);
      return;
    }
    this._heard();
    if (typeof data === 'string') {
      this._onControl(parseControl(data));
      return;
    }
    this._received += data.byteLength;
    this._deliver(data);
    if (this._received - this._ackedToProxy >= ACK_EVERY_BYTES) {
      this._ack();
    } else if (this._ackTimer === null) {
      this._ackTimer = setTimeout(() => this._ack(), ACK_DELAY_MS);
    }
  }

  _onControl(message) {
    if (message === null) {
      return; // unknown or malformed: a later protocol's message, ignored
    }
    if (message.type === 'session') {
      this._secret = message.resume;
      this._grace = message.grace;
      this._silenceLimit = silenceLimitMs(message.heartbeat);
      this._heard();
      this._emit(new CustomEvent('session', { detail: { grace: message.grace, heartbeat: message.heartbeat } }));
    } else if (message.type === 'ack') {
      this._sent.ack(message.received);
    }
  }

  _ack() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (this._socket && this._socket.readyState === OPEN && this._received > this._ackedToProxy) {
      this._socket.send(JSON.stringify({ type: 'ack', received: this._received }));
      this._ackedToProxy = this._received;
    }
  }

  /** Something came from the proxy: the connection is alive; re-arms the silence watchdog. */
  _heard() {
    this._lastHeard = performance.now();
    if (this._silenceLimit === null || this._silenceTimer !== null) {
      return;
    }
    const check = () => {
      this._silenceTimer = null;
      if (!this._socket || this._readyState !== OPEN) {
        return;
      }
      const silent = performance.now() - this._lastHeard;
      if (silent >= this._silenceLimit) {
        // Gone without a word (a NAT or VPN dropped it): TCP may take minutes to say so.
        const socket = this._socket;
        this._drop(socket, { code: 1006, reason: '', wasClean: false });
        socket.close();
        return;
      }
      this._silenceTimer = setTimeout(check, this._silenceLimit - silent);
    };
    this._silenceTimer = setTimeout(check, this._silenceLimit);
  }

  _onSocketClose(socket, event) {
    if (socket !== this._socket) {
      return;
    }
    if (this._closing || this._secret === null || isDeliberateClose(event)) {
      this._socket = null;
      this._finish(event);
      return;
    }
    this._drop(socket, event);
  }

  /** The connection was lost: stop using it and start re-attaching. */
  _drop(socket, event) {
    socket.onmessage = null;
    socket.onclose = null;
    socket.onopen = null;
    this._socket = null;
    this._stopTimers();
    const dropAt = performance.now();
    this._resuming = {
      dropAt,
      deadline: dropAt + this._grace * 1000 + WINDOW_MARGIN_MS,
      attempts: 0,
      timer: null,
      cancel: null,
      code: event.code,
    };
    this._emit(new CustomEvent('resuming', { detail: { code: event.code, deadline: this._resuming.deadline } }));
    this._nextAttempt();
  }

  _nextAttempt() {
    const resuming = this._resuming;
    const left = resuming.deadline - performance.now();
    if (left <= 0 && resuming.attempts > 0) {
      this._giveUp();
      return;
    }
    // The last attempt falls on the deadline, so that a reachable proxy gives its verdict.
    const wait = Math.max(0, Math.min(retryDelay(resuming.attempts), left));
    resuming.timer = setTimeout(() => this._attempt(), wait);
  }

  _attempt() {
    const resuming = this._resuming;
    resuming.timer = null;
    resuming.attempts += 1;
    let socket;
    try {
      socket = new this._Impl(this._resumeUrl, [PROTOCOL]);
    } catch (error) {
      console.error(`consolegate: cannot re-attach: ${error.message}`);
      this._giveUp();
      return;
    }
    socket.binaryType = 'arraybuffer';
    let settled = false;
    let timeout = null;
    /** Ends this attempt; `close` also closes its socket. */
    const settle = (close) => {
      settled = true;
      clearTimeout(timeout);
      resuming.cancel = null;
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      if (close) {
        socket.close();
      }
    };
    const failed = (close) => {
      if (!settled) {
        settle(close);
        this._nextAttempt();
      }
    };
    resuming.cancel = () => settle(true);
    timeout = setTimeout(() => failed(true), ATTEMPT_TIMEOUT_MS);
    socket.onerror = () => {};
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'resume', resume: this._secret, received: this._received }));
    };
    socket.onmessage = (event) => {
      const message = typeof event.data === 'string' ? parseControl(event.data) : null;
      if (message === null || message.type !== 'resumed') {
        failed(true);
        return;
      }
      settle(false);
      this._resumed(socket, message);
    };
    socket.onclose = (event) => {
      if (!isDeliberateClose(event)) {
        failed(false);
        return;
      }
      // The proxy's verdict (4403: wrong, used or expired secret; 4409: the stream cannot
      // continue; 1001: shutting down): final.
      settle(false);
      this._resuming = null;
      this._finish(event);
    };
  }

  /** Re-attached: continue both streams where the proxy and the page lost them. */
  _resumed(socket, message) {
    const resuming = this._resuming;
    let resend;
    try {
      resend = this._sent.from(message.received);
    } catch (error) {
      console.error(`consolegate: cannot continue the console session: ${error.message}`);
      socket.onmessage = null;
      socket.onclose = null;
      socket.close(4000, 'stream offsets do not match');
      this._resuming = null;
      this._finish({ code: 1006, reason: '', wasClean: false });
      return;
    }
    this._sent.ack(message.received);
    this._secret = message.resume;
    this._resuming = null;
    this._ackedToProxy = this._received; // the resume message told the proxy
    this._listen(socket, false);
    this._heard();
    for (const chunk of resend) {
      socket.send(chunk);
    }
    this._emit(new CustomEvent('resumed', {
      detail: { attempts: resuming.attempts, millis: Math.round(performance.now() - resuming.dropAt) },
    }));
  }

  _giveUp() {
    const resuming = this._resuming;
    this._abandonAttempt();
    this._resuming = null;
    this._finish({ code: resuming ? resuming.code : 1006, reason: '', wasClean: false });
  }

  _abandonAttempt() {
    const resuming = this._resuming;
    if (!resuming) {
      return;
    }
    clearTimeout(resuming.timer);
    if (resuming.cancel) {
      resuming.cancel();
    }
  }

  _stopTimers() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    clearTimeout(this._silenceTimer);
    this._silenceTimer = null;
  }

  /** The session is over: tell noVNC and the page, once. */
  _finish({ code, reason, wasClean }) {
    if (this._readyState === CLOSED) {
      return;
    }
    this._readyState = CLOSED;
    this._stopTimers();
    this._sent.clear();
    if (!wasClean) {
      this._emit(new Event('error'));
    }
    this._emit(new CloseEvent('close', { code, reason, wasClean }));
  }
}

ResumableSocket.CONNECTING = CONNECTING;
ResumableSocket.OPEN = OPEN;
ResumableSocket.CLOSING = CLOSING;
ResumableSocket.CLOSED = CLOSED;
