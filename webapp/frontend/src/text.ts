// Message text is untrusted. It is always inserted with textContent; this only removes
// characters that could visually reorder (spoof) the conversation.

/** U+202A–U+202E (embeddings/overrides) and U+2066–U+2069 (isolates). */
const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/g;

export function stripBidiControls(text: string): string {
  return text.replace(BIDI_CONTROLS, '');
}

/** A run of message text: plain, or a web address to show as a link. */
export type TextSegment = { kind: 'text'; text: string } | { kind: 'link'; text: string; href: string };

/**
 * Candidate web addresses: `http(s)://` and everything up to whitespace, a quote, an angle
 * bracket, a backslash or a control/invisible character. Other schemes (javascript:, data:,
 * mailto:, …) never match, and markdown link syntax is not interpreted.
 */
const URL_CANDIDATE =
  /https?:\/\/[^\s<>"'`\\\u0000-\u001F\u007F-\u009F\u200B-\u200F\u2028-\u202F\u2060-\u206F\uFEFF]+/gi;
/** Punctuation that ends a sentence rather than an address. */
const TRAILING = new Set([...'.,;:!?*_~…\u201C\u201D\u2018\u2019\u00BB\u203A']);
const CLOSING: Readonly<Record<string, string>> = { ')': '(', ']': '[', '}': '{' };
const WORD_CHAR = /[\p{L}\p{N}_]/u;

function count(text: string, ch: string): number {
  let n = 0;
  for (const c of text) if (c === ch) n++;
  return n;
}

/** Drop trailing punctuation; a closing bracket stays only when the address opened it. */
function trimTrailing(candidate: string): string {
  let url = candidate;
  for (;;) {
    const last = url.slice(-1);
    const opening = CLOSING[last];
    if (TRAILING.has(last)) url = url.slice(0, -1);
    else if (opening !== undefined && count(url, last) > count(url, opening)) url = url.slice(0, -1);
    else return url;
  }
}

/** The address to link to, or null when it is not a plain http(s) address. */
export function safeHref(candidate: string): string | null {
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
  // user:password@ is how a link pretends to go somewhere it doesn't (https://clinic.org@evil.test).
  if (url.hostname === '' || url.username !== '' || url.password !== '') return null;
  return url.href;
}

/**
 * Split text into plain runs and http(s) links. Only for text written by the clinic's side
 * (bot, staff, system): patient text is never linkified. The result is meant for DOM APIs
 * (text nodes, setAttribute), never for innerHTML.
 */
export function linkify(text: string): TextSegment[] {
  const out: TextSegment[] = [];
  let plainFrom = 0;
  for (const match of text.matchAll(URL_CANDIDATE)) {
    const start = match.index;
    // "xhttps://…" is not an address on its own.
    if (start > 0 && WORD_CHAR.test(text[start - 1]!)) continue;
    const candidate = trimTrailing(match[0]);
    const href = safeHref(candidate);
    if (href === null || !/^https?:\/\/[^/?#]/i.test(candidate)) continue;
    if (start > plainFrom) out.push({ kind: 'text', text: text.slice(plainFrom, start) });
    out.push({ kind: 'link', text: candidate, href });
    plainFrom = start + candidate.length;
  }
  if (plainFrom < text.length) out.push({ kind: 'text', text: text.slice(plainFrom) });
  return out;
}
