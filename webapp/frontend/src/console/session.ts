import { MemoryStorage, type KeyValueStorage } from '../storage';
import type { Credentials } from './api';

// The staff member's credentials live in sessionStorage only: they go when the tab closes,
// and are not shared with other tabs or left on a shared clinic computer.

export const CONSOLE_TOKEN_KEY = 'clinic.console.token';
export const CONSOLE_NAME_KEY = 'clinic.console.staffName';

export function loadCredentials(storage: KeyValueStorage): Credentials | null {
  const token = storage.getItem(CONSOLE_TOKEN_KEY);
  const staffName = storage.getItem(CONSOLE_NAME_KEY);
  if (!token || !staffName) return null;
  return { token, staffName };
}

export function saveCredentials(storage: KeyValueStorage, creds: Credentials): void {
  storage.setItem(CONSOLE_TOKEN_KEY, creds.token);
  storage.setItem(CONSOLE_NAME_KEY, creds.staffName);
}

export function clearCredentials(storage: KeyValueStorage): void {
  storage.removeItem(CONSOLE_TOKEN_KEY);
  storage.removeItem(CONSOLE_NAME_KEY);
}

/**
 * window.sessionStorage when usable, else memory (storage disabled): signing in still works,
 * it just does not survive a reload. Errors are swallowed.
 */
export function sessionStore(): KeyValueStorage {
  const memory = new MemoryStorage();
  let store: Storage | null = null;
  try {
    store = window.sessionStorage;
    const probe = '__clinic_console_probe__';
    store.setItem(probe, '1');
    store.removeItem(probe);
  } catch {
    store = null;
  }
  if (store === null) return memory;
  const ss = store;
  return {
    getItem(key) {
      try {
        return ss.getItem(key) ?? memory.getItem(key);
      } catch {
        return memory.getItem(key);
      }
    },
    setItem(key, value) {
      try {
        ss.setItem(key, value);
        memory.removeItem(key);
      } catch {
        memory.setItem(key, value);
      }
    },
    removeItem(key) {
      memory.removeItem(key);
      try {
        ss.removeItem(key);
      } catch {
        /* ignore */
      }
    },
  };
}
