import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const page = (name: string) => fileURLToPath(new URL(name, import.meta.url));

// The built pages are served by the Python server from webapp/static/:
// index.html (the patient chat, at /) and console.html (the staff console for cases, at
// /console). Both reference their assets absolutely, under /assets/.
export default defineConfig({
  base: '/',
  build: {
    outDir: '../static',
    emptyOutDir: true,
    // Keep the output CSP-friendly: no inline scripts, no data: URIs for assets.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    rolldownOptions: {
      input: {
        index: page('./index.html'),
        console: page('./console.html'),
      },
    },
  },
  server: {
    // `npm run dev`: forward the socket.io endpoint and the admin API to a locally running
    // server. The console is at http://localhost:5173/console.
    proxy: {
      '/socket.io': { target: 'http://127.0.0.1:8000', ws: true },
      '/admin/api': { target: 'http://127.0.0.1:8000' },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
