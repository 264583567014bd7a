import { describe, expect, it } from 'vitest';
import { errorText, format, pickLang, strings } from './i18n';
import { linkify, safeHref, stripBidiControls, type TextSegment } from './text';
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

describe('linkify', () => {
  const links = (text: string) =>
    linkify(text)
      .filter((p): p is Extract<TextSegment, { kind: 'link' }> => p.kind === 'link')
      .map((p) => [p.text, p.href]);
  const joined = (text: string) => linkify(text).map((p) => p.text).join('');

  it('links the citation list of an answer and keeps every character of the text', () => {
    const text =
      'Rest and fluids help [1].\n\n' +
      'Sources:\n[1] Fever in adults — https://medlineplus.gov/fever.html\n[2] Clinic hours — clinic FAQ';
    expect(linkify(text)).toEqual([
      { kind: 'text', text: 'Rest and fluids help [1].\n\nSources:\n[1] Fever in adults — ' },
      { kind: 'link', text: 'https://medlineplus.gov/fever.html', href: 'https://medlineplus.gov/fever.html' },
      { kind: 'text', text: '\n[2] Clinic hours — clinic FAQ' },
    ]);
    expect(joined(text)).toBe(text);
  });

  it('leaves trailing punctuation out of the address', () => {
    expect(links('See https://a.test/x.')).toEqual([['https://a.test/x', 'https://a.test/x']]);
    expect(links('https://a.test/x, https://b.test; https://c.test/?q=1!')).toEqual([
      ['https://a.test/x', 'https://a.test/x'],
      ['https://b.test', 'https://b.test/'],
      ['https://c.test/?q=1', 'https://c.test/?q=1'],
    ]);
    expect(links('(see https://a.test/page)')).toEqual([['https://a.test/page', 'https://a.test/page']]);
    expect(links('“https://a.test/q”...')).toEqual([['https://a.test/q', 'https://a.test/q']]);
    // A bracket the address itself opened is part of it.
    expect(links('https://en.wikipedia.org/wiki/Fever_(disambiguation).')).toEqual([
      ['https://en.wikipedia.org/wiki/Fever_(disambiguation)', 'https://en.wikipedia.org/wiki/Fever_(disambiguation)'],
    ]);
    expect(joined('(see https://a.test/page).')).toBe('(see https://a.test/page).');
  });

  it('stops at quotes, angle brackets, whitespace and invisible characters', () => {
    expect(links('<a href="https://evil.test/x">click</a>')).toEqual([['https://evil.test/x', 'https://evil.test/x']]);
    expect(links('https://a.test/\u200Bmore')).toEqual([['https://a.test/', 'https://a.test/']]);
    expect(links('https://a.test\nhttps://b.test')).toHaveLength(2);
  });

  it('never links other schemes or markdown tricks', () => {
    for (const text of [
      'javascript:alert(1)',
      '[click me](javascript:alert(document.cookie))',
      'data:text/html,<script>alert(1)</script>',
      'data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==',
      'vbscript:msgbox(1)',
      'file:///etc/passwd',
      'ftp://files.test/x',
      'mailto:a@b.test',
      '//evil.test/path',
      'www.evil.test',
      'xhttps://evil.test',
      'https://',
      'https://.',
      'https:///evil.test',
      'https://clinic.test@evil.test/login',
      'https://user:pw@evil.test/',
    ]) {
      expect(links(text), text).toEqual([]);
      expect(joined(text), text).toBe(text);
    }
  });

  it('accepts only http(s) addresses with a host', () => {
    expect(safeHref('https://medlineplus.gov/fever.html')).toBe('https://medlineplus.gov/fever.html');
    expect(safeHref('http://clinic.test')).toBe('http://clinic.test/');
    expect(safeHref('javascript:alert(1)')).toBeNull();
    expect(safeHref('data:text/html,x')).toBeNull();
    expect(safeHref('https://a@b.test')).toBeNull();
    expect(safeHref('not a url')).toBeNull();
  });

  it('returns plain text untouched', () => {
    expect(linkify('')).toEqual([]);
    expect(linkify('no links here')).toEqual([{ kind: 'text', text: 'no links here' }]);
  });
});
