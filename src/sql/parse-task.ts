// The piscina task of OffThreadParser (parse-pool.ts): one SQL text → its
// ParsedText, with the same parser and facts walk as the worker's own thread.
// Runs in a pool thread; the parser's WebAssembly module loads once per thread.

import { initParser, parseStatements, type ParsedText } from './parser.ts';

await initParser();

export default function parse(sql: string): ParsedText {
  return parseStatements(sql);
}
