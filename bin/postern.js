#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step needed); `npm run build` makes dist/ for packaging.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
