// Bound parameters of a Bind message, for the audit record only (audit.parameters:
// off | redacted | full). Read only when the mode is not "off": the relay path
// never pays for it otherwise. Layout ("Bind" in the protocol's message formats):
//   'B' int32 len, portal\0, statement\0,
//   int16 nFormats, int16 format[nFormats],
//   int16 nParams, { int32 len (-1 = NULL), bytes[len] } × nParams,
//   int16 nResultFormats, int16 resultFormat[…]

import { isUtf8 } from 'node:buffer';
import type { AuditParameter } from './record.ts';
import type { ParameterMode } from '../config/config.ts';
import { utf8PrefixLength } from './record.ts';

export interface BoundParameter {
  /** 0 = text, 1 = binary. */
  format: number;
  /** A subarray of the message (no copy); null is SQL NULL. */
  value: Buffer | null;
}

/** The parameters of a whole Bind message buf[start, end) (type byte at start); null when malformed. */
export function readBindParameters(buf: Buffer, start: number, end: number): BoundParameter[] | null {
  let pos = start + 5;
  for (let names = 0; names < 2; names++) {
    const nul = buf.indexOf(0, pos);
    if (nul < 0 || nul >= end) return null;
    pos = nul + 1;
  }
  if (pos + 2 > end) return null;
  const nFormats = buf.readInt16BE(pos);
  pos += 2;
  if (nFormats < 0 || pos + 2 * nFormats + 2 > end) return null;
  const formatsAt = pos;
  pos += 2 * nFormats;
  const nParams = buf.readInt16BE(pos);
  pos += 2;
  if (nParams < 0) return null;
  // One format code applies to all; none means all text; else one per parameter.
  if (nFormats > 1 && nFormats !== nParams) return null;
  const out: BoundParameter[] = [];
  for (let i = 0; i < nParams; i++) {
    if (pos + 4 > end) return null;
    const len = buf.readInt32BE(pos);
    pos += 4;
    const format = nFormats === 0 ? 0 : buf.readInt16BE(formatsAt + 2 * (nFormats === 1 ? 0 : i));
    if (len === -1) {
      out.push({ format, value: null });
      continue;
    }
    if (len < 0 || pos + len > end) return null;
    out.push({ format, value: buf.subarray(pos, pos + len) });
    pos += len;
  }
  return out;
}

/** The audited form of bound parameters; undefined when the mode is off. Copies what it keeps. */
export function auditParameters(params: readonly BoundParameter[] | null, mode: ParameterMode, maxParameterBytes: number): AuditParameter[] | undefined {
  if (mode === 'off' || params === null) return undefined;
  const out: AuditParameter[] = new Array<AuditParameter>(params.length);
  for (let i = 0; i < params.length; i++) {
    const p = params[i] as BoundParameter;
    const v = p.value;
    if (v === null) {
      out[i] = null;
      continue;
    }
    if (mode === 'redacted') {
      out[i] = { bytes: v.length };
      continue;
    }
    if (p.format === 0 && isUtf8(v)) {
      const text = v.toString('utf8');
      const cut = utf8PrefixLength(text, maxParameterBytes);
      out[i] = cut < text.length ? { bytes: v.length, text: text.slice(0, cut), truncated: true } : { bytes: v.length, text };
    } else {
      const keep = Math.min(v.length, Math.floor(maxParameterBytes / 2));
      out[i] = keep < v.length ? { bytes: v.length, hex: v.toString('hex', 0, keep), truncated: true } : { bytes: v.length, hex: v.toString('hex') };
    }
  }
  return out;
}
