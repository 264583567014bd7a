// Message text is untrusted. It is always inserted with textContent; this only removes
// characters that could visually reorder (spoof) the conversation.

/** U+202A–U+202E (embeddings/overrides) and U+2066–U+2069 (isolates). */
const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/g;

export function stripBidiControls(text: string): string {
  return text.replace(BIDI_CONTROLS, '');
}
