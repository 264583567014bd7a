import { MemoryStorage, type KeyValueStorage } from '../storage';
import { parseUser, type Credentials } from './api';

// The session token lives in sessionStorage only: it goes when the tab closes, is not shared
// with other tabs, and is not left on a shared clinic computer.

export const CONSOLE_TOKEN_KEY = 'clinic.console.token';
export const CONSOLE_USER_KEY = 'clinic.console.user';

/** The saved session, unless there is none or it has expired (now: ms since the epoch). */
export function loadCredentials(storage: KeyValueStorage, now: number = Date.now()): Credentials | null {
  const token = storage.getItem(CONSOLE_TOKEN_KEY);
  const raw = storage.getItem(CONSOLE_USER_KEY);
  if (!token || !raw) return null;
  let saved: unknown;
  try {
    saved = JSON.parse(raw);
  } catch {
    return null;
  }
  const user = parseUser(saved);
  if (user === null) return null;
  const expires = (saved as { expires_at?: unknown }).expires_at;
  const expiresAt = typeof expires === 'string' ? expires : null;
  if (expiresAt !== null && Date.parse(expiresAt) <= now) return null;
  return { ...user, token, expiresAt };
}

export function saveCredentials(storage: KeyValueStorage, creds: Credentials): void {
  storage.setItem(CONSOLE_TOKEN_KEY, creds.token);
  storage.setItem(
    CONSOLE_USER_KEY,
    JSON.stringify({
      username: creds.username,
      display_name: creds.displayName,
      role: creds.role,
      expires_at: creds.expiresAt,
    }),
  );
}

export function clearCredentials(storage: KeyValueStorage): void {
  storage.removeItem(CONSOLE_TOKEN_KEY);
  storage.removeItem(CONSOLE_USER_KEY);
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
