// @vitest-environment happy-dom
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { strings } from './i18n';
import { MessageList } from './messageList';
import type { QuickReply } from './protocol';
import { msg } from './testUtil';
import { buildView } from './view';

describe('MessageList (DOM)', () => {
  let root: HTMLElement;
  let chosen: QuickReply[];
  let list: MessageList;

  beforeEach(() => {
    document.body.replaceChildren();
    root = document.createElement('div');
    root.id = 'messages';
    document.body.append(root);
    chosen = [];
    list = new MessageList(root, strings('en'), 'en', (b) => chosen.push(b));
  });

  it('renders message text as plain text, never as HTML', () => {
    const hostile = '<img src=x onerror="alert(1)"><a href="https://evil.test">click</a> https://x.test';
    list.render(buildView([msg({ id: 'm1', seq: 1, text: hostile })], []), false);
    expect(root.querySelector('img, a, script')).toBeNull();
    expect(root.querySelector('.message .message-text')?.textContent).toBe(hostile);
  });

  it('isolates text direction and strips bidi overrides', () => {
    list.render(buildView([msg({ id: 'm1', seq: 1, text: 'abc\u202Edef\u2066' })], []), false);
    const text = root.querySelector<HTMLElement>('.message-text')!;
    expect(text.dir).toBe('auto');
    expect(text.textContent).toBe('abcdef');
  });

  it('exposes stable attributes and an accessible sender prefix', () => {
    list.render(
      buildView(
        [
          msg({ id: 'p1', seq: 1, sender: 'patient', direction: 'inbound', client_id: 'c1' }),
          msg({ id: 'b1', seq: 2, sender: 'bot' }),
          msg({ id: 's1', seq: 3, sender: 'staff' }),
        ],
        [],
      ),
      false,
    );
    const nodes = [...root.querySelectorAll<HTMLElement>('.message')];
    expect(nodes.map((n) => [n.dataset.id, n.dataset.sender])).toEqual([
      ['p1', 'patient'],
      ['b1', 'bot'],
      ['s1', 'staff'],
    ]);
    expect(nodes.map((n) => n.querySelector('.visually-hidden')?.textContent)).toEqual([
      'You said:',
      'Assistant said:',
      'Staff said:',
    ]);
  });

  it('renders quick replies as real buttons that report their choice', () => {
    const buttons = [
      { title: 'Book', payload: '/book' },
      { title: '<b>Hours</b>', payload: '/hours' },
    ];
    list.render(buildView([msg({ id: 'b1', seq: 1, buttons })], []), false);
    const els = [...root.querySelectorAll<HTMLButtonElement>('.message button')];
    expect(els.map((b) => [b.type, b.textContent])).toEqual([
      ['button', 'Book'],
      ['button', '<b>Hours</b>'],
    ]);
    els[1]!.click();
    expect(chosen).toEqual([buttons[1]]);
  });

  it('reuses the node when a pending message is confirmed and shows failures', () => {
    const pending = [{ client_id: 'c1', text: 'hi', created_at: '2025-01-01T10:00:00.000Z' }];
    list.render(buildView([], pending), false);
    const node = root.querySelector<HTMLElement>('.message')!;
    expect(node.hasAttribute('data-id')).toBe(false);
    expect(node.dataset.status).toBe('sending');
    expect(node.textContent).toContain('sending…');

    list.render(buildView([msg({ id: 'm1', seq: 1, sender: 'patient', client_id: 'c1', text: 'hi' })], pending), false);
    expect(root.querySelector('.message')).toBe(node);
    expect(node.dataset.id).toBe('m1');
    expect(node.textContent).not.toContain('sending…');

    list.render(buildView([], [], [{ ...pending[0]!, client_id: 'c2', error: 'Too long' }]), false);
    expect(root.querySelectorAll('.message')).toHaveLength(1);
    expect(root.querySelector('.message-error')?.textContent).toBe('Not sent: Too long');
  });

  it('keeps DOM order in sync with the view order', () => {
    const a = msg({ id: 'a', seq: 1 });
    const b = msg({ id: 'b', seq: 2 });
    const c = msg({ id: 'c', seq: 3 });
    list.render(buildView([a, c], []), false);
    list.render(buildView([a, b, c], []), false);
    const ids = () => [...root.querySelectorAll<HTMLElement>('.message')].map((n) => n.dataset.id);
    expect(ids()).toEqual(['a', 'b', 'c']);
    list.render(buildView([c], []), false);
    expect(ids()).toEqual(['c']);
  });

  it('scrolls to the end when asked', () => {
    const spy = vi.spyOn(root, 'scrollHeight', 'get').mockReturnValue(500);
    root.scrollTop = 0;
    list.render(buildView([msg({ id: 'a', seq: 1 })], []), true);
    expect(root.scrollTop).toBe(500);
    spy.mockRestore();
  });
});
