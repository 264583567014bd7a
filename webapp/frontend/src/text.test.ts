import { describe, expect, it } from 'vitest';
import { errorText, format, pickLang, strings } from './i18n';
import { stripBidiControls } from './text';
import { newClientId } from './uuid';

describe('stripBidiControls', () => {
  it('removes embedding, override and isolate controls only', () => {
    const spoof = 'pay \u202Eexe.txt\u202C and \u2066x\u2069 \u2067y\u2068z';
    expect(stripBidiControls(spoof)).toBe('pay exe.txt and x yz');
    expect(stripBidiControls('שלום hello مرحبا\n<b>')).toBe('שלום hello مرحبا\n<b>');
  });
});

describe('i18n', () => {
  it('picks Spanish for es-* and English otherwise', () => {
    expect(pickLang('es-MX')).toBe('es');
    expect(pickLang('ES')).toBe('es');
    expect(pickLang('en-US')).toBe('en');
    expect(pickLang(undefined)).toBe('en');
  });

  it('has the disclaimer in both languages', () => {
    expect(strings('en').disclaimer).toBe('This assistant does not replace medical care. In an emergency call 911.');
    expect(strings('es').disclaimer).toContain('911');
  });

  it('formats templates and error texts', () => {
    expect(format('{n} / {max}', { n: 3, max: 2000 })).toBe('3 / 2000');
    const s = strings('en');
    expect(errorText(s, 'too_long', 'server says')).toBe(s.errTooLong);
    expect(errorText(s, 'weird', 'server says')).toBe('server says');
    expect(errorText(s, 'weird', ' ')).toBe(s.errGeneric);
  });
});

describe('newClientId', () => {
  const uuidV4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it('uses crypto.randomUUID when available', () => {
    expect(newClientId()).toMatch(uuidV4);
  });

  it('falls back to getRandomValues outside secure contexts', () => {
    const insecure = { getRandomValues: globalThis.crypto.getRandomValues.bind(globalThis.crypto) } as unknown as Crypto;
    const a = newClientId(insecure);
    expect(a).toMatch(uuidV4);
    expect(newClientId(insecure)).not.toBe(a);
  });
});
