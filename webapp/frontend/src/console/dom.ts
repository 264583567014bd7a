// Small DOM helpers shared by the console's views. Server data only ever goes through
// textContent and attribute setters: no innerHTML anywhere in the console.

import { stripBidiControls } from '../text';

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: { id?: string; className?: string; text?: string } = {},
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (attrs.id !== undefined) node.id = attrs.id;
  if (attrs.className !== undefined) node.className = attrs.className;
  if (attrs.text !== undefined) node.textContent = attrs.text;
  return node;
}

export function button(id: string, text: string, className = 'button'): HTMLButtonElement {
  const b = el('button', { id, className, text });
  b.type = 'button';
  return b;
}

export function setText(node: Element, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

export function setAttr(node: Element, name: string, value: string | null): void {
  if (value === null) node.removeAttribute(name);
  else if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

export function setHidden(node: HTMLElement, hidden: boolean): void {
  if (node.hidden !== hidden) node.hidden = hidden;
}

export function setDisabled(node: HTMLButtonElement | HTMLTextAreaElement | HTMLInputElement | HTMLSelectElement, disabled: boolean): void {
  if (node.disabled !== disabled) node.disabled = disabled;
}

/** Server text for display: never markup, and without characters that reorder the line. */
export function clean(text: string): string {
  return stripBidiControls(text);
}

export const dateTimeFormat = new Intl.DateTimeFormat('en', {
  month: 'short',
  day: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
});
export const clockFormat = new Intl.DateTimeFormat('en', { hour: 'numeric', minute: '2-digit', second: '2-digit' });

export function setTime(node: HTMLTimeElement, iso: string | null, fallback: string): void {
  const ms = iso === null ? Number.NaN : Date.parse(iso);
  if (Number.isNaN(ms)) {
    setAttr(node, 'datetime', null);
    setText(node, fallback);
    return;
  }
  const date = new Date(ms);
  setAttr(node, 'datetime', date.toISOString());
  setText(node, dateTimeFormat.format(date));
}

