// The console page consolegate serves with WEB_ROOT. The ticket comes from the address's
// #fragment, which browsers never send to any server, so it reaches no access log; the page
// connects to wss://<this origin>/<ticket> offering the subprotocols "consolegate.v1" and
// "binary" (as oVirt's portal does), and lets noVNC speak RFB over that connection. With
// "consolegate.v1" (RECONNECT_GRACE_PERIOD on the proxy) a dropped connection is re-attached
// without a new ticket (resume.js) while noVNC carries on; with "binary" it is a plain
// WebSocket.
import RFB from './novnc/core/rfb.js';
import { ResumableSocket } from './resume.js';

const body = document.body;
const screen = document.getElementById('screen');
const statusLine = document.getElementById('status');
const passwordForm = document.getElementById('password-form');
const passwordInput = document.getElementById('password');
const ctrlAltDel = document.getElementById('ctrl-alt-del');
const reconnectButton = document.getElementById('reconnect');

// What the user reads for each way a session ends; the close codes are consolegate's.
const CLOSE_REASONS = {
  1000: 'The console closed the connection.',
  1001: 'The console proxy is shutting down. Open the console again in a moment.',
  1003: 'The console proxy refused a message from this page.',
  1011: 'The console proxy could not reach the VM\'s console securely.',
};
// A proxy answering refusals with an HTTP status (REFUSE_WITH_HTTP_STATUS) leaves the browser
// only a bare 1006.
const REFUSED = 'The console could not be opened: the ticket was refused (it may have expired) '
  + 'or the VM\'s console is unreachable. Open the console again from the portal.';

let ticket = null;
let rfb = null;
let socketClose = null;
let securityReason = null;
let everConnected = false;
let desktopName = '';
/** Set while the connection is being re-attached, and when re-attaching failed. */
let reattaching = null;
let reattachFailed = false;
let graceSecs = 0;

function show(state, text) {
  body.dataset.state = state;
  statusLine.textContent = text;
}

function takeTicket() {
  const raw = window.location.hash.slice(1);
  if (!raw) {
    return null;
  }
  // Keep the ticket off the address bar (screen sharing, copied links); it stays in memory
  // for Reconnect.
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

function socketUrl() {
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${window.location.host}/${ticket}`;
}

function connectedText() {
  return desktopName ? `Connected to ${desktopName}.` : 'Connected.';
}

function connect() {
  reconnectButton.hidden = true;
  passwordForm.hidden = true;
  socketClose = null;
  securityReason = null;
  everConnected = false;
  reattaching = null;
  reattachFailed = false;
  show('connecting', 'Connecting…');

  // The page opens the connection itself, so that it can tell the user the close code and
  // reason, which noVNC does not report.
  const socket = new ResumableSocket(socketUrl());
  socket.addEventListener('close', (event) => {
    socketClose = { code: event.code, reason: event.reason };
    reattachFailed = reattaching !== null && !event.wasClean;
    reattaching = null;
  });
  socket.addEventListener('session', (event) => {
    graceSecs = event.detail.grace;
  });
  socket.addEventListener('resuming', () => {
    // Discreet: the picture (or the password prompt) stays, and what the user types is kept
    // and delivered once re-attached.
    reattaching = { state: body.dataset.state, text: statusLine.textContent };
    show('reconnecting', 'Connection lost, reconnecting…');
  });
  socket.addEventListener('resumed', () => {
    if (reattaching && body.dataset.state === 'reconnecting') {
      show(reattaching.state, reattaching.text);
    }
    reattaching = null;
  });

  rfb = new RFB(screen, socket, { shared: true });
  rfb.scaleViewport = true;
  rfb.background = '#000';
  rfb.addEventListener('credentialsrequired', (event) => {
    show('password', 'The console asks for its password.');
    passwordForm.hidden = false;
    passwordInput.value = '';
    passwordInput.focus();
    if (!event.detail.types.includes('password')) {
      show('failed', `The console asks for credentials this page cannot give: ${event.detail.types.join(', ')}.`);
    }
  });
  rfb.addEventListener('securityfailure', (event) => {
    securityReason = event.detail.reason || `security failure (status ${event.detail.status})`;
  });
  rfb.addEventListener('connect', () => {
    everConnected = true;
    passwordForm.hidden = true;
    ctrlAltDel.hidden = false;
    show('connected', connectedText());
    rfb.focus();
  });
  rfb.addEventListener('desktopname', (event) => {
    // noVNC names the desktop just before it reports the connection.
    desktopName = event.detail.name;
    document.title = `${desktopName} – Console`;
    if (body.dataset.state === 'connected') {
      show('connected', `Connected to ${event.detail.name}.`);
    }
  });
  rfb.addEventListener('disconnect', (event) => {
    ctrlAltDel.hidden = true;
    passwordForm.hidden = true;
    reconnectButton.hidden = false;
    // The close event may come just after noVNC's own disconnect event.
    setTimeout(() => explain(event.detail.clean), 50);
  });
}

function explain(clean) {
  const close = socketClose;
  let text;
  if (close && close.code >= 4000 && close.code <= 4999 && close.reason) {
    // consolegate refused the request (or a re-attach) and says why, for people (contract:
    // 4000 + HTTP status).
    text = everConnected
      ? `The console session ended: ${close.reason}.`
      : `The console could not be opened: ${close.reason}.`;
  } else if (reattachFailed) {
    text = `The connection to the console was lost and could not be restored within ${graceSecs} s.`;
  } else if (securityReason) {
    text = `The connection was refused: ${securityReason}.`;
  } else if (close && CLOSE_REASONS[close.code]) {
    text = CLOSE_REASONS[close.code];
  } else if (!everConnected) {
    text = REFUSED;
  } else {
    text = clean ? 'Disconnected.' : 'The connection to the console was lost.';
  }
  if (close && close.code >= 4000 && close.code <= 4999) {
    text += ` (close ${close.code})`;
  } else if (close && close.code !== 1005) {
    text += ` (close ${close.code}${close.reason ? `: ${close.reason}` : ''})`;
  }
  const ended = close && close.code >= 4000 && close.code <= 4999;
  show(everConnected && clean && !securityReason && !ended && !reattachFailed ? 'disconnected' : 'failed', text);
}

passwordForm.addEventListener('submit', (event) => {
  event.preventDefault();
  passwordForm.hidden = true;
  show('connecting', 'Checking the password…');
  rfb.sendCredentials({ password: passwordInput.value });
  passwordInput.value = '';
});
ctrlAltDel.addEventListener('click', () => rfb && rfb.sendCtrlAltDel());
reconnectButton.addEventListener('click', () => connect());

ticket = takeTicket();
if (ticket) {
  connect();
} else {
  show('failed', 'This address carries no console ticket. Open the console from the portal.');
}
