// What a finished TLS handshake proved about the client, and the identity a
// verified client certificate carries (auth.cert.identity). Read once per
// connection, after the handshake: the session decides from these values,
// never from the socket again.

import type tls from 'node:tls';
import type { CertIdentitySource } from '../config/config.ts';

/** What the TLS layer proved about the client. */
export interface TlsInfo {
  /** A client certificate was presented and chains to tls.ca_file (and is in date). */
  authorized: boolean;
  /** Why a presented certificate was not authorized (e.g. CERT_HAS_EXPIRED). */
  authorizationError: string | null;
  certPresented: boolean;
  /** The subject as "K=V,K=V" in certificate order; a repeated attribute joined by "+". */
  subject: string;
  /** subjectAltName entries as Node prints them ("DNS:…", "URI:…", "email:…", "IP Address:…"). */
  san: string[];
  /** SHA-256 fingerprint, colon-separated hex. */
  fingerprint: string;
  commonName: string | null;
}

/** Read what the handshake on this (server-side) socket proved about the client. */
export function peerTlsInfo(secure: tls.TLSSocket): TlsInfo {
  const cert = secure.getPeerCertificate();
  // Without a client certificate Node returns an empty object, not null.
  const presented = Object.keys(cert).length > 0;
  return {
    authorized: presented && secure.authorized,
    authorizationError: presented && !secure.authorized ? String(secure.authorizationError ?? 'not trusted') : null,
    certPresented: presented,
    subject: presented ? formatSubject(cert.subject) : '',
    san: presented && typeof cert.subjectaltname === 'string' ? cert.subjectaltname.split(', ').filter((x) => x.length > 0) : [],
    fingerprint: presented ? cert.fingerprint256 : '',
    commonName: presented ? firstString(cert.subject.CN) : null,
  };
}

/** The subject as "K=V,K=V"; an attribute that occurs more than once (two OUs) becomes "K=V1+V2". */
export function formatSubject(subject: tls.Certificate | undefined): string {
  if (subject === undefined) return '';
  return Object.entries(subject)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`)
    .join(',');
}

/**
 * The identity a verified client certificate carries (auth.cert.identity):
 * the subject CN, or the first subjectAltName entry of the chosen kind
 * (DNS name, URI, e-mail address). null when the certificate has none.
 */
export function certIdentity(info: TlsInfo, source: CertIdentitySource): string | null {
  if (source === 'cn') return info.commonName;
  const prefix = source === 'san-dns' ? 'DNS:' : source === 'san-uri' ? 'URI:' : 'email:';
  const entry = info.san.find((x) => x.startsWith(prefix));
  return entry === undefined ? null : entry.slice(prefix.length);
}

/** A subject attribute that occurs more than once arrives as an array: its first value. */
function firstString(v: string | string[] | undefined): string | null {
  if (v === undefined) return null;
  return Array.isArray(v) ? (v[0] ?? null) : v;
}
