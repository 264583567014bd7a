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
    const hostile = '<img src=x onerror="alert(1)"><a href="https://evil.test">click</a> <script>alert(2)</script>';
    list.render(
      buildView(
        [
          msg({ id: 'm1', seq: 1, text: hostile }),
          msg({ id: 'p1', seq: 2, text: hostile, sender: 'patient', direction: 'inbound' }),
        ],
        [],
      ),
      false,
    );
    expect(root.querySelector('img, script')).toBeNull();
    const texts = [...root.querySelectorAll('.message .message-text')];
    expect(texts.map((t) => t.textContent)).toEqual([hostile, hostile]);
    // The bot's copy links only the bare address; the markup around it stays text.
    expect([...root.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.textContent])).toEqual([
      ['https://evil.test/', 'https://evil.test'],
    ]);
    expect(texts[1]!.querySelector('a')).toBeNull();
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

  describe('links', () => {
    const answer =
      'Rest and drink fluids [1].\n\n' +
      'Sources:\n[1] Fever in adults — https://medlineplus.gov/fever.html\n[2] Clinic hours — clinic FAQ';

    it('turns https addresses in bot, staff and system text into safe links', () => {
      list.render(
        buildView(
          [
            msg({ id: 'b1', seq: 1, text: answer }),
            msg({ id: 's1', seq: 2, sender: 'staff', text: 'Form: https://clinic.test/forms/intake.' }),
            msg({ id: 'y1', seq: 3, sender: 'system', text: '(status: https://status.clinic.test)' }),
          ],
          [],
        ),
        false,
      );
      const anchors = [...root.querySelectorAll<HTMLAnchorElement>('.message-text a')];
      expect(anchors.map((a) => [a.getAttribute('href'), a.textContent])).toEqual([
        ['https://medlineplus.gov/fever.html', 'https://medlineplus.gov/fever.html'],
        ['https://clinic.test/forms/intake', 'https://clinic.test/forms/intake'],
        ['https://status.clinic.test/', 'https://status.clinic.test'],
      ]);
      for (const a of anchors) {
        expect(a.getAttribute('target')).toBe('_blank');
        expect(a.getAttribute('rel')).toBe('noopener noreferrer nofollow');
        expect(a.attributes).toHaveLength(4); // class, href, target, rel: nothing else
      }
      // The text reads the same, newlines and all.
      expect(root.querySelector('.message-text')?.textContent).toBe(answer);
    });

    it('never links patient text, pending or failed', () => {
      const hostile = [
        '[click me](javascript:alert(document.cookie))',
        'javascript:alert(1)',
        'data:text/html,<script>alert(1)</script>',
        '[Clinic portal](https://evil.test/login)',
        'https://evil.test/phish',
      ].join('\n');
      const pending = [{ client_id: 'c2', text: hostile, created_at: '2025-01-01T10:00:00.000Z' }];
      const failed = [{ client_id: 'c3', text: hostile, created_at: '2025-01-01T10:01:00.000Z', error: 'x' }];
      list.render(
        buildView(
          [msg({ id: 'p1', seq: 1, sender: 'patient', direction: 'inbound', client_id: 'c1', text: hostile })],
          pending,
          failed,
        ),
        false,
      );
      expect(root.querySelectorAll('.message')).toHaveLength(3);
      expect(root.querySelector('a')).toBeNull();
      for (const t of root.querySelectorAll('.message-text')) expect(t.textContent).toBe(hostile);
    });

    it('keeps javascript: and data: addresses in bot text as plain text', () => {
      const text = 'Try javascript:alert(1) or data:text/html,<b>x</b> or [x](javascript:alert(2))';
      list.render(buildView([msg({ id: 'b1', seq: 1, text })], []), false);
      expect(root.querySelector('a')).toBeNull();
      expect(root.querySelector('.message-text')?.textContent).toBe(text);
    });

    it('strips bidi controls before finding links', () => {
      list.render(buildView([msg({ id: 'b1', seq: 1, text: 'see \u202Ehttps://a.test/x\u202C.' })], []), false);
      expect(root.querySelector('.message-text')?.textContent).toBe('see https://a.test/x.');
      expect(root.querySelector('a')?.getAttribute('href')).toBe('https://a.test/x');
    });

    it('does not rebuild links that did not change', () => {
      const m = msg({ id: 'b1', seq: 1, text: answer });
      list.render(buildView([m], []), false);
      const a = root.querySelector('a');
      list.render(buildView([m, msg({ id: 'b2', seq: 2 })], []), false);
      expect(root.querySelector('a')).toBe(a);
    });
  });

  describe('drafts', () => {
    const pending = [{ client_id: 'c1', text: 'what is a fever?', created_at: '2025-01-01T10:00:00.000Z' }];

    it('shows a draft like a bot message, kept out of live announcements, without links', () => {
      list.render(buildView([], pending, [], [{ replyTo: 'c1', text: 'See https://medlineplus.go' }]), false);
      const nodes = [...root.querySelectorAll<HTMLElement>('.message')];
      expect(nodes).toHaveLength(2);
      const draft = nodes[1]!;
      expect(draft.classList.contains('message--bot')).toBe(true);
      expect(draft.classList.contains('message--draft')).toBe(true);
      expect(draft.getAttribute('aria-live')).toBe('off');
      expect(draft.getAttribute('aria-busy')).toBe('true');
      expect(draft.dataset.replyTo).toBe('c1');
      expect(draft.hasAttribute('data-id')).toBe(false);
      expect(draft.hasAttribute('data-sender')).toBe(false);
      expect(draft.querySelector('.message-prefix')?.textContent).toBe('Assistant is writing:');
      expect(draft.querySelector('.message-text')?.textContent).toBe('See https://medlineplus.go');
      expect(draft.querySelector('a')).toBeNull();
    });

    it('grows in place, then the stored reply replaces it with a new, announced node', () => {
      list.render(buildView([], pending, [], [{ replyTo: 'c1', text: 'A fever' }]), false);
      const draft = root.querySelector<HTMLElement>('.message--draft')!;
      list.render(buildView([], pending, [], [{ replyTo: 'c1', text: 'A fever is a high' }]), false);
      expect(root.querySelector('.message--draft')).toBe(draft);
      expect(draft.querySelector('.message-text')?.textContent).toBe('A fever is a high');

      list.render(
        buildView(
          [
            msg({ id: 'm1', seq: 1, sender: 'patient', client_id: 'c1', text: 'what is a fever?' }),
            msg({ id: 'r1', seq: 2, text: 'A fever is a high temperature.' }),
          ],
          [],
        ),
        false,
      );
      expect(draft.isConnected).toBe(false);
      const nodes = [...root.querySelectorAll<HTMLElement>('.message')];
      expect(nodes.map((n) => [n.dataset.id, n.dataset.sender, n.dataset.status])).toEqual([
        ['m1', 'patient', 'sent'],
        ['r1', 'bot', 'sent'],
      ]);
      expect(nodes[1]!.hasAttribute('aria-live')).toBe(false);
      expect(nodes[1]!.hasAttribute('aria-busy')).toBe(false);
    });
  });
});

