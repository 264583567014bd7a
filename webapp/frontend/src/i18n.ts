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
  // Continue the conversation by text message (SMS).
  smsRegion: 'Text messages',
  smsToggle: 'Continue by text message',
  smsIntro: 'Get the replies as text messages on your phone. Message and data rates may apply.',
  smsPhoneLabel: 'Mobile phone number',
  smsSendCode: 'Send code',
  smsCodeSent: 'We sent a 6-digit code to {masked}.',
  smsCodeExpires: 'It expires in {min} min.',
  smsCodeLabel: '6-digit code',
  smsConfirm: 'Confirm',
  smsResend: 'Send a new code',
  smsResendWait: 'You can ask for a new code in {n} s.',
  smsOtherNumber: 'Use another number',
  smsSendingCode: 'Sending the code…',
  smsCheckingCode: 'Checking the code…',
  smsLinked: 'Texts go to {masked}',
  smsChange: 'Change number',
  smsTryAgain: 'Try again',
  smsErrPhoneEmpty: 'Enter your mobile number.',
  smsErrPhoneInvalid: 'That phone number does not look right.',
  smsErrCodeFormat: 'Enter the 6 digits from the text message.',
  smsErrCodeWrong: 'That code is not right.',
  smsErrNewCode: 'Please ask for a new code.',
  smsErrOffline: 'Could not reach the clinic. Check your connection and try again.',
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
  smsRegion: 'Mensajes de texto',
  smsToggle: 'Continuar por mensaje de texto',
  smsIntro: 'Reciba las respuestas como mensajes de texto en su teléfono. Pueden aplicarse tarifas de mensajes y datos.',
  smsPhoneLabel: 'Número de teléfono móvil',
  smsSendCode: 'Enviar código',
  smsCodeSent: 'Enviamos un código de 6 dígitos al {masked}.',
  smsCodeExpires: 'Vence en {min} min.',
  smsCodeLabel: 'Código de 6 dígitos',
  smsConfirm: 'Confirmar',
  smsResend: 'Enviar un código nuevo',
  smsResendWait: 'Podrá pedir un código nuevo en {n} s.',
  smsOtherNumber: 'Usar otro número',
  smsSendingCode: 'Enviando el código…',
  smsCheckingCode: 'Comprobando el código…',
  smsLinked: 'Los mensajes de texto van al {masked}',
  smsChange: 'Cambiar número',
  smsTryAgain: 'Intentar de nuevo',
  smsErrPhoneEmpty: 'Escriba su número de móvil.',
  smsErrPhoneInvalid: 'Ese número de teléfono no parece correcto.',
  smsErrCodeFormat: 'Escriba los 6 dígitos del mensaje de texto.',
  smsErrCodeWrong: 'Ese código no es correcto.',
  smsErrNewCode: 'Pida un código nuevo.',
  smsErrOffline: 'No se pudo conectar con la clínica. Revise su conexión e inténtelo de nuevo.',
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
