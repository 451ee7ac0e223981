// `{{name}}`: a berth module (a `wasi:http` handler) in JavaScript.
//
// Build: `berth build` · Run: `berth deploy` · Iterate: `berth dev`
// The base's capabilities are imported from `berth:base` (wit/deps/berth-base.wit).
import { get } from 'berth:base/config@0.1.0';
import { increment } from 'berth:base/kv@0.1.0';
import { log } from 'berth:base/log@0.1.0';

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  const path = url.pathname + url.search;
  // The module's own durable counter in the base's key-value store.
  const hits = increment('hits', 1n);
  const greeting = get('greeting') ?? 'Hello';
  log('info', `hit ${hits} on ${path}`);
  return new Response(`${greeting} from {{name}} (JavaScript)! You asked for ${path}; hits: ${hits}\n`, {
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });
}
