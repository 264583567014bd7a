import type { Case, CaseMessage } from './api';

/** A valid case as the server sends it (wire format). */
export function wireCase(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'case-1',
    conversation_id: 'conv-1',
    priority: 'high',
    reason: 'triage',
    status: 'open',
    channel: 'web',
    language: 'en',
    created_at: '2025-01-01T10:00:00Z',
    due_at: '2025-01-01T10:15:00Z',
    overdue: false,
    claimed_by: null,
    claimed_at: null,
    triage: { disposition: 'see_today', reasons: ['fever over 3 days'] },
    summary_patient: 'I have had a fever since Monday.',
    summary_clinician: 'Adult, fever 3 days, no red flags.',
    rule_ids: ['fever.duration'],
    ...over,
  };
}

/** A valid message as the server sends it (wire format). */
export function wireMessage(over: Record<string, unknown> & { id: unknown; seq: unknown }): Record<string, unknown> {
  return {
    direction: 'inbound',
    sender: 'patient',
    text: `text ${over.id}`,
    created_at: '2025-01-01T10:00:00Z',
    status: 'received',
    ...over,
  };
}

/** A parsed case (what the app holds). */
export function aCase(over: Partial<Case> = {}): Case {
  return { ...(wireCase() as unknown as Case), ...over };
}

export function aMessage(over: Partial<CaseMessage> & { id: string; seq: number }): CaseMessage {
  return { ...(wireMessage(over) as unknown as CaseMessage) };
}
