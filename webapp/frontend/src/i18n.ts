// UI strings. Message text itself comes from the server and is never translated here.

export type Lang = 'en' | 'es';

const en = {
  pageTitle: 'Clinic assistant',
  heading: 'Clinic assistant',
  disclaimer: 'This assistant does not replace medical care. In an emergency call 911.',
  conversationLabel: 'Conversation',
  emptyConversation: 'Send a message to start the conversation.',
  inputLabel: 'Your message',
  inputHint: 'Enter to send, Shift+Enter for a new line.',
  send: 'Send',
  counter: '{n} / {max}',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  typing: 'The assistant is typing…',
  sending: 'sending…',
  notSent: 'Not sent',
  youSaid: 'You said:',
  assistantSaid: 'Assistant said:',
  assistantWriting: 'Assistant is writing:',
  staffSaid: 'Staff said:',
  systemSaid: 'Notice:',
  quickReplies: 'Suggested replies',
  dismiss: 'Dismiss',
  errEmpty: 'The message is empty.',
  errTooLong: 'The message is too long.',
  errRateLimited: 'You are sending messages too quickly. Your message will be sent in a moment.',
  errGeneric: 'Something went wrong.',
};

export type Strings = typeof en;

const es: Strings = {
  pageTitle: 'Asistente de la clínica',
  heading: 'Asistente de la clínica',
  disclaimer: 'Este asistente no reemplaza la atención médica. En caso de emergencia, llame al 911.',
  conversationLabel: 'Conversación',
  emptyConversation: 'Escriba un mensaje para comenzar la conversación.',
  inputLabel: 'Su mensaje',
  inputHint: 'Intro para enviar, Mayús+Intro para una nueva línea.',
  send: 'Enviar',
  counter: '{n} / {max}',
  connecting: 'Conectando…',
  connected: 'Conectado',
  reconnecting: 'Reconectando…',
  typing: 'El asistente está escribiendo…',
  sending: 'enviando…',
  notSent: 'No enviado',
  youSaid: 'Usted dijo:',
  assistantSaid: 'El asistente dijo:',
  assistantWriting: 'El asistente está escribiendo:',
  staffSaid: 'El personal dijo:',
  systemSaid: 'Aviso:',
  quickReplies: 'Respuestas sugeridas',
  dismiss: 'Cerrar',
  errEmpty: 'El mensaje está vacío.',
  errTooLong: 'El mensaje es demasiado largo.',
  errRateLimited: 'Está enviando mensajes muy rápido. Su mensaje se enviará en un momento.',
  errGeneric: 'Algo salió mal.',
};

const DICTIONARY: Record<Lang, Strings> = { en, es };

export function pickLang(language: string | undefined | null): Lang {
  return (language ?? '').toLowerCase().startsWith('es') ? 'es' : 'en';
}

export function strings(lang: Lang): Strings {
  return DICTIONARY[lang];
}

export function format(template: string, values: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in values ? String(values[name]) : whole,
  );
}

/**
 * Text for an error code. Known codes use the local dictionary (so the page stays in one
 * language); unknown codes fall back to the server's message, then to a generic text.
 */
export function errorText(s: Strings, code: string, serverMessage: string): string {
  switch (code) {
    case 'empty':
      return s.errEmpty;
    case 'too_long':
      return s.errTooLong;
    case 'rate_limited':
      return s.errRateLimited;
    default:
      return serverMessage.trim() !== '' ? serverMessage : s.errGeneric;
  }
}
