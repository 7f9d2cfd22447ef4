import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// Served by `switchyard serve` under /console (CONSOLE_DIR=console/dist).
export default defineConfig({
  base: '/console/',
  plugins: [react()],
  build: { outDir: 'dist', sourcemap: false, reportCompressedSize: true },
  test: { environment: 'jsdom', include: ['src/**/*.test.{ts,tsx}'] },
});
