// Builtins the WebAssembly target cannot serve, and what a policy should use
// instead. Compiling against opa-wasm's capabilities makes such a call a build
// error, but OPA words it as "undefined function time.now_ns" — which reads
// like a typo. rolegate rewrites those lines to name the builtin, say that the
// wasm target lacks it, and point at the alternative.

/** Known builtins that opa-wasm's capabilities leave out → what to use instead. */
export const WASM_BUILTIN_ALTERNATIVES: Readonly<Record<string, string>> = {
  'time.now_ns': 'use input.time (rolegate supplies the time)',
  'time.weekday': 'use input.time.weekday (rolegate supplies the time)',
  'time.clock': 'use input.time.hour and input.time.minute (rolegate supplies the time)',
  'time.date': 'use input.time.rfc3339 (its first 10 characters are the local date; rolegate supplies the time)',
  'time.parse_rfc3339_ns': 'compare input.time.unix_ns, hour, minute or weekday instead of parsing times',
  'time.parse_ns': 'compare input.time.unix_ns, hour, minute or weekday instead of parsing times',
  'time.parse_duration_ns': 'write durations as nanoseconds in data and compare them with input.time.unix_ns',
  'time.format': 'use input.time.rfc3339 (already formatted, in the configured zone)',
  'time.add_date': 'compare input.time.unix_ns with bounds computed ahead of time and kept in data',
  'http.send': 'rolegate evaluates policies without network access: put what the policy needs in data (it is rebuilt and reloaded with the policy)',
  'net.lookup_ip_addr': 'rolegate evaluates policies without DNS: list the addresses as CIDR ranges in data and test input.client.addr with net.cidr_contains',
  'net.cidr_contains_matches': 'use net.cidr_contains over the ranges in data',
  'net.cidr_expand': 'use net.cidr_contains over the ranges in data',
  'net.cidr_merge': 'merge the ranges ahead of time and keep them in data; test them with net.cidr_contains',
  'net.cidr_overlap': 'use net.cidr_contains (an address) or net.cidr_intersects (two ranges)',
  'net.cidr_is_valid': 'net.cidr_contains(r, r) is undefined for an invalid range r',
  'opa.runtime': 'use input.proxy (env, instance): rolegate puts what it knows about itself in the input',
  'io.jwt.decode': 'rolegate verifies the token at login: read its claims from input.identity.claims',
  'io.jwt.decode_verify': 'rolegate verifies the token at login: read its claims from input.identity.claims',
  'crypto.x509.parse_certificates': 'rolegate reads the client certificate at login: use input.identity.cert (subject, san, fingerprint)',
  'object.keys': 'use {k | some k, _ in obj}',
  'strings.any_prefix_match': 'use `some p in prefixes; startswith(s, p)`',
  'strings.any_suffix_match': 'use `some s in suffixes; endswith(x, s)`',
  trace: 'run the same input through `opa eval --explain full` instead',
};

/** The message for a builtin the wasm target lacks. */
export function unsupportedBuiltinMessage(name: string): string {
  const alternative = WASM_BUILTIN_ALTERNATIVES[name] ?? (name.startsWith('io.jwt.') ? WASM_BUILTIN_ALTERNATIVES['io.jwt.decode'] : undefined);
  if (alternative !== undefined) return `${name} is not available in the wasm target: ${alternative}`;
  return `${name} is not available in the wasm target (it is not in @open-policy-agent/opa-wasm's capabilities.json)`;
}

// One error line of opa's pretty output: "<file>:<row>: rego_type_error: undefined function <name>".
const UNDEFINED_FUNCTION = /^(.*?)rego_type_error: undefined function ([A-Za-z_][\w.]*)\s*$/;

/**
 * Rewrites opa's "undefined function X" lines where X is an OPA builtin (in
 * `opaBuiltins`, from `opa capabilities --current`) into the wasm message;
 * an undefined function that is no builtin at all (a typo, a missing import)
 * keeps opa's own wording.
 */
export function explainUndefinedFunctions(output: string, opaBuiltins: ReadonlySet<string>): string {
  return output
    .split('\n')
    .map((line) => {
      const match = UNDEFINED_FUNCTION.exec(line);
      if (match === null) return line;
      const [, prefix = '', name = ''] = match;
      if (!opaBuiltins.has(name)) return line;
      return `${prefix}${unsupportedBuiltinMessage(name)}`;
    })
    .join('\n');
}

/** The builtin names an `opa capabilities` document lists. */
export function builtinNames(capabilities: unknown): Set<string> {
  const names = new Set<string>();
  const builtins = typeof capabilities === 'object' && capabilities !== null ? (capabilities as { builtins?: unknown }).builtins : undefined;
  if (!Array.isArray(builtins)) return names;
  for (const builtin of builtins) {
    const name = typeof builtin === 'object' && builtin !== null ? (builtin as { name?: unknown }).name : undefined;
    if (typeof name === 'string') names.add(name);
  }
  return names;
}
