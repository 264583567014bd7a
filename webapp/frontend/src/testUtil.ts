import type { Msg } from './protocol';

/** Builds a valid server message for tests. */
export function msg(over: Partial<Msg> & { id: string; seq: number }): Msg {
  return {
    direction: 'outbound',
    sender: 'bot',
    text: `text ${over.id}`,
    buttons: [],
    created_at: '2025-01-01T10:00:00Z',
    client_id: null,
    ...over,
  };
}
