import { describe, expect, it } from 'vitest';
import { DraftStore, MAX_DRAFT_LENGTH, MAX_DRAFTS } from './drafts';

describe('DraftStore', () => {
  it('appends pieces in order, per message answered', () => {
    const d = new DraftStore();
    expect(d.apply({ reply_to: 'c1', delta: 'Fever ' })).toBe(true);
    expect(d.apply({ reply_to: 'c2', delta: 'Other' })).toBe(true);
    expect(d.apply({ reply_to: 'c1', delta: 'is common.' })).toBe(true);
    expect(d.apply({ reply_to: 'c1', delta: '' })).toBe(false);
    expect(d.list()).toEqual([
      { replyTo: 'c1', text: 'Fever is common.' },
      { replyTo: 'c2', text: 'Other' },
    ]);
  });

  it('reset throws the text away; the next piece starts over', () => {
    const d = new DraftStore();
    d.apply({ reply_to: 'c1', delta: 'half an ans' });
    expect(d.apply({ reply_to: 'c1', reset: true })).toBe(true);
    expect(d.list()).toEqual([]);
    expect(d.apply({ reply_to: 'c1', reset: true })).toBe(false);
    d.apply({ reply_to: 'c1', delta: 'A whole answer.' });
    expect(d.list()).toEqual([{ replyTo: 'c1', text: 'A whole answer.' }]);
  });

  it('ignores pieces of a finished draft, but not of a removed one', () => {
    const d = new DraftStore();
    d.apply({ reply_to: 'c1', delta: 'one' });
    d.apply({ reply_to: 'c2', delta: 'two' });
    expect(d.finishAll()).toEqual(['c1', 'c2']);
    expect(d.apply({ reply_to: 'c1', delta: ' more' })).toBe(false);
    expect(d.apply({ reply_to: 'c1', reset: true })).toBe(false);
    expect(d.size).toBe(0);

    d.apply({ reply_to: 'c3', delta: 'three' });
    expect(d.remove('c3')).toBe(true);
    expect(d.apply({ reply_to: 'c3', delta: 'again' })).toBe(true);

    d.clear();
    expect(d.apply({ reply_to: 'c1', delta: 'new conversation' })).toBe(true);
  });

  it('bounds the number and the length of drafts', () => {
    const d = new DraftStore();
    for (let i = 0; i < MAX_DRAFTS; i++) expect(d.apply({ reply_to: `c${i}`, delta: 'x' })).toBe(true);
    expect(d.apply({ reply_to: 'one-too-many', delta: 'x' })).toBe(false);
    expect(d.has('one-too-many')).toBe(false);

    const big = new DraftStore();
    const piece = 'y'.repeat(4000);
    while (big.apply({ reply_to: 'c1', delta: piece }));
    expect(big.list()[0]!.text.length).toBeLessThanOrEqual(MAX_DRAFT_LENGTH);
    expect(big.list()[0]!.text.length).toBeGreaterThan(MAX_DRAFT_LENGTH - piece.length);
  });
});
