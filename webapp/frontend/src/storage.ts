/** The subset of the Web Storage API the app uses; lets tests pass an in-memory fake. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export const TOKEN_KEY = 'clinic.chat.token';
export const PENDING_KEY = 'clinic.chat.pending';

export class MemoryStorage implements KeyValueStorage {
  private readonly data = new Map<string, string>();
  getItem(key: string): string | null {
    return this.data.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.data.set(key, value);
  }
  removeItem(key: string): void {
    this.data.delete(key);
  }
}

/**
 * localStorage when it is usable, otherwise an in-memory stand-in (private browsing,
 * storage disabled, quota exceeded). Write errors are swallowed: the chat must keep working.
 */
export function browserStorage(): KeyValueStorage {
  const fallback = new MemoryStorage();
  let ls: Storage | null = null;
  try {
    ls = window.localStorage;
    const probe = '__clinic_chat_probe__';
    ls.setItem(probe, '1');
    ls.removeItem(probe);
  } catch {
    ls = null;
  }
  if (ls === null) return fallback;
  const store = ls;
  return {
    getItem(key) {
      try {
        return store.getItem(key) ?? fallback.getItem(key);
      } catch {
        return fallback.getItem(key);
      }
    },
    setItem(key, value) {
      try {
        store.setItem(key, value);
        fallback.removeItem(key);
      } catch {
        fallback.setItem(key, value);
      }
    },
    removeItem(key) {
      fallback.removeItem(key);
      try {
        store.removeItem(key);
      } catch {
        /* ignore */
      }
    },
  };
}
