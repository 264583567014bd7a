import { defineConfig } from 'vitest/config';

// The built page is served by the Python server from webapp/static/.
export default defineConfig({
  base: '/',
  build: {
    outDir: '../static',
    emptyOutDir: true,
    // Keep the output CSP-friendly: no inline scripts, no data: URIs for assets.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: {
    // `npm run dev`: forward the socket.io endpoint to a locally running chat server.
    proxy: {
      '/socket.io': { target: 'http://127.0.0.1:8000', ws: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
