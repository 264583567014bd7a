import { io } from 'socket.io-client';
import { ChatController, MAX_MESSAGE_LENGTH, type ChatView, type ConnectionStatus } from './chat';
import { format, pickLang, strings, type Strings } from './i18n';
import { MessageList } from './messageList';
import { PhoneLinkController } from './phoneLink';
import { PhoneLinkPanel } from './phoneLinkView';
import { browserStorage, PENDING_KEY } from './storage';
import { newClientId } from './uuid';

// The server acks after the assistant has produced its reply, so allow for a slow bot.
// A timed-out message is resent with the same client_id (the server deduplicates).
const ACK_TIMEOUT_MS = 30000;
const NOTICE_MS = 8000;
const RECONNECT_DELAY_MS = 5000;
// link_phone texts a code before it acks (an SMS provider call); verify_phone is quick.
const PHONE_ACK_TIMEOUT_MS = 20000;

function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from index.html`);
  return node as T;
}

/** Fill every [data-i18n] element (and [data-i18n-label] aria-label) from the dictionary. */
function applyStrings(s: Strings): void {
  for (const node of document.querySelectorAll<HTMLElement>('[data-i18n]')) {
    const key = node.dataset.i18n as keyof Strings;
    if (key in s) node.textContent = s[key];
  }
  for (const node of document.querySelectorAll<HTMLElement>('[data-i18n-label]')) {
    const key = node.dataset.i18nLabel as keyof Strings;
    if (key in s) node.setAttribute('aria-label', s[key]);
  }
}

const lang = pickLang(navigator.language);
const s = strings(lang);
document.documentElement.lang = lang;
document.title = s.pageTitle;
applyStrings(s);

const form = byId<HTMLFormElement>('chat-form');
const input = byId<HTMLTextAreaElement>('chat-input');
const counter = byId('chat-counter');
const messagesEl = byId('messages');
const typingEl = byId('typing');
const statusEl = byId('connection-status');
const noticeEl = byId('notice');
const noticeText = byId('notice-text');
const noticeDismiss = byId<HTMLButtonElement>('notice-dismiss');

messagesEl.dataset.empty = s.emptyConversation;
input.maxLength = MAX_MESSAGE_LENGTH;

let noticeTimer: ReturnType<typeof setTimeout> | null = null;
function hideNotice(): void {
  if (noticeTimer !== null) clearTimeout(noticeTimer);
  noticeTimer = null;
  noticeText.textContent = '';
  noticeEl.classList.remove('is-visible');
}
noticeDismiss.addEventListener('click', () => {
  hideNotice();
  input.focus();
});

const STATUS_TEXT: Record<ConnectionStatus, string> = {
  connecting: s.connecting,
  connected: s.connected,
  reconnecting: s.reconnecting,
};

const list = new MessageList(messagesEl, s, lang, (button) => {
  chat.choose(button);
  input.focus();
});

const view: ChatView = {
  renderItems: (items, scrollToEnd) => list.render(items, scrollToEnd),
  setStatus(status) {
    statusEl.dataset.state = status;
    statusEl.textContent = STATUS_TEXT[status];
  },
  setTyping(active) {
    typingEl.classList.toggle('is-active', active);
    typingEl.textContent = active ? s.typing : '';
  },
  showNotice(text) {
    if (noticeTimer !== null) clearTimeout(noticeTimer);
    noticeText.textContent = text;
    noticeEl.classList.add('is-visible');
    noticeTimer = setTimeout(hideNotice, NOTICE_MS);
  },
};

const chat = new ChatController({
  storage: browserStorage(),
  view,
  strings: s,
  newId: () => newClientId(),
  isConnected: () => socket.connected,
  send: (message) => socket.timeout(ACK_TIMEOUT_MS).emitWithAck('user_message', message),
});

// "Continue by text message" (link a mobile number to this conversation).
const phonePanel = new PhoneLinkPanel(byId('sms-link'), s, {
  toggle: () => phoneLink.toggle(),
  submitPhone: (raw) => phoneLink.submitPhone(raw),
  submitCode: (raw) => phoneLink.submitCode(raw),
  resend: () => phoneLink.resend(),
  useAnotherNumber: () => phoneLink.useAnotherNumber(),
  changeNumber: () => phoneLink.changeNumber(),
  retry: () => phoneLink.retry(),
});

const phoneLink = new PhoneLinkController({
  view: phonePanel,
  strings: s,
  isConnected: () => socket.connected,
  linkPhone: (request) => socket.timeout(PHONE_ACK_TIMEOUT_MS).emitWithAck('link_phone', request),
  verifyPhone: (request) => socket.timeout(PHONE_ACK_TIMEOUT_MS).emitWithAck('verify_phone', request),
});

const socket = io({
  path: '/socket.io',
  transports: ['websocket', 'polling'],
  tryAllTransports: true,
  // A function, so every (re)connect presents the latest saved token.
  auth: (cb) => {
    const token = chat.token();
    cb(token !== null ? { token } : {});
  },
  autoConnect: false,
});

// socket.io stops retrying after a server-side disconnect or a refused handshake; keep trying.
let reconnectTimer: ReturnType<typeof setTimeout> | null = null;
function reconnectLater(): void {
  if (reconnectTimer !== null) return;
  reconnectTimer = setTimeout(() => {
    reconnectTimer = null;
    if (!socket.connected && !socket.active) socket.connect();
  }, RECONNECT_DELAY_MS);
}

socket.on('connect', () => chat.handleConnect());
socket.on('disconnect', (reason) => {
  chat.handleDisconnect();
  phoneLink.handleDisconnect();
  if (reason === 'io server disconnect') reconnectLater();
});
socket.on('connect_error', () => {
  view.setStatus('reconnecting');
  if (!socket.active) reconnectLater();
});
socket.on('session', (data: unknown) => {
  chat.handleSession(data);
  phoneLink.handleSession(data);
});
socket.on('history', (data: unknown) => chat.handleHistory(data));
socket.on('message', (data: unknown) => chat.handleMessage(data));
socket.on('draft', (data: unknown) => chat.handleDraft(data));
socket.on('typing', (data: unknown) => chat.handleTyping(data));
socket.on('error_message', (data: unknown) => chat.handleErrorMessage(data));

// Another tab changed the shared pending queue (sent or queued something).
window.addEventListener('storage', (event) => {
  if (event.key === PENDING_KEY || event.key === null) chat.handleStorageChange();
});

function updateCounter(): void {
  const n = input.value.length;
  counter.textContent = format(s.counter, { n, max: MAX_MESSAGE_LENGTH });
  counter.classList.toggle('is-near-limit', n >= MAX_MESSAGE_LENGTH * 0.9);
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (chat.submit(input.value)) {
    input.value = '';
    updateCounter();
  }
  input.focus();
});

input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    form.requestSubmit();
  }
});
input.addEventListener('input', updateCounter);

updateCounter();
chat.start();
phoneLink.start();
socket.connect();
// Don't pop up the on-screen keyboard on phones before the patient asks for it.
if (window.matchMedia('(pointer: fine)').matches) input.focus();
