// Evaluating the compiled policy (entry points rolegate/connect and
// rolegate/statement, docs/policy.md) with @open-policy-agent/opa-wasm.
//
// One PolicyEngine per thread: the WebAssembly.Module is compiled once (main
// thread) and posted to the workers; each worker instantiates it with its own
// memory and calls setData. Evaluation is synchronous and never throws: any
// failure is a deny.

import { loadPolicy } from '@open-policy-agent/opa-wasm';
import type { LoadedPolicy } from '@open-policy-agent/opa-wasm';
import { describeThrown, RolegateError } from '../errors.ts';
import type { ConnectDecision, ConnectInput, StatementDecision, StatementInput } from './contract.ts';
import type { BuiltPolicy, PolicyEntrypoint } from './build.ts';

/** What a worker needs to instantiate a policy; every field survives postMessage. */
export interface PolicyArtifact {
  module: WebAssembly.Module;
  data: unknown;
  revision: string;
}

/** A compiled policy as it crosses threads: the module is compiled once in main. */
export interface PolicyBundle extends PolicyArtifact {
  /**
   * The policy's Rego mentions `sql` (it may read input.statement.sql): then a
   * statement decision is cached by the exact text; otherwise by the facts
   * alone, so statements that differ only in literals share one decision.
   */
  readsStatementText: boolean;
}

/** Compiles the wasm of a built policy once; the result can be posted to worker threads. */
export async function compilePolicy(built: BuiltPolicy): Promise<PolicyArtifact> {
  try {
    // Copy into a fresh ArrayBuffer: WebAssembly.compile wants BufferSource over an ArrayBuffer.
    const bytes = new Uint8Array(built.wasm.byteLength);
    bytes.set(built.wasm);
    const module = await WebAssembly.compile(bytes);
    return { module, data: built.data, revision: built.revision };
  } catch (thrown) {
    throw new RolegateError('RG_POLICY_LOAD', `policy.wasm does not compile: ${describeThrown(thrown)}`, { cause: thrown });
  }
}

export interface PolicyEngineOptions {
  /** WebAssembly pages (64 KiB) at start; default 16 (1 MiB). */
  initialMemoryPages?: number;
  /**
   * Upper bound on the instance's memory (data + one evaluation's heap); default
   * 1024 pages (64 MiB). Exceeding it fails that evaluation (a deny), not the process.
   */
  maximumMemoryPages?: number;
  /** Called synchronously with every evaluation failure (RG_POLICY_EVAL) before it turns into a deny. */
  onError?: (error: RolegateError, entrypoint: PolicyEntrypoint) => void;
}

export const DEFAULT_INITIAL_MEMORY_PAGES = 16;
export const DEFAULT_MAXIMUM_MEMORY_PAGES = 1024;

/** Rule ids the engine itself reports (the policy's own ids are documented in docs/policy.md). */
export const ENGINE_RULES = {
  /** The policy's answer was undefined or not an object with allow === true. */
  defaultDeny: 'default-deny',
  /** Evaluation threw (opa-wasm throws strings), or the data could not be loaded. */
  policyError: 'policy-error',
} as const;

// The client sees this; the details (file:line of a conflict, out of memory) go to onError.
const POLICY_ERROR_REASON = 'policy evaluation failed (RG_POLICY_EVAL); the proxy log has the details';

// Input goes to opa-wasm as an ArrayBuffer of UTF-8 JSON, encoded here with one
// shared TextEncoder (encode() returns a view over its own exactly-sized buffer,
// which is what the SDK copies into wasm memory). The SDK's own overhead measured
// ~1 µs for bytes vs ~6 µs for an object; bench/micro-policy.ts shows that
// once our own JSON.stringify is counted the two cost the same (~1.8 µs for an
// 850-byte input): the gain comes when the bytes already exist, e.g. a
// per-connection prefix (identity, client, proxy) encoded once.
const encoder = new TextEncoder();

function encodeInput(input: unknown): ArrayBuffer {
  const bytes = encoder.encode(JSON.stringify(input));
  const buffer = bytes.buffer;
  // Never true on V8 today; guards against an encoder that returns a view into a larger buffer.
  if (bytes.byteOffset !== 0 || buffer.byteLength !== bytes.byteLength || !(buffer instanceof ArrayBuffer)) {
    const exact = new ArrayBuffer(bytes.byteLength);
    new Uint8Array(exact).set(bytes);
    return exact;
  }
  return buffer;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

/**
 * opa-wasm's result set: `[]` when the entry point is undefined, else
 * `[{ result: <value> }]`. Returns the value, or undefined.
 */
function resultValue(resultSet: unknown): unknown {
  if (!Array.isArray(resultSet) || resultSet.length !== 1) return undefined;
  const first: unknown = resultSet[0];
  return isPlainObject(first) ? first.result : undefined;
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined (no rule produced a decision)';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function ruleOf(decision: Record<string, unknown>, fallback: string): string {
  return isNonEmptyString(decision.rule) ? decision.rule : fallback;
}

function reasonOf(decision: Record<string, unknown>, fallback: string): string {
  return typeof decision.reason === 'string' && decision.reason !== '' ? decision.reason : fallback;
}

/** Shapes the connect entry point's value; anything malformed is a deny. */
export function toConnectDecision(value: unknown, input: ConnectInput): ConnectDecision {
  if (!isPlainObject(value)) {
    return { allow: false, role: null, database: null, rule: ENGINE_RULES.defaultDeny, reason: `connect policy returned ${describeValue(value)}` };
  }
  if (value.allow !== true) {
    return {
      allow: false,
      role: null,
      database: null,
      rule: ruleOf(value, ENGINE_RULES.defaultDeny),
      reason: reasonOf(value, value.allow === false ? 'connection denied by policy' : 'connect decision has no allow: true'),
    };
  }
  if (!isNonEmptyString(value.role)) {
    return {
      allow: false,
      role: null,
      database: null,
      rule: ENGINE_RULES.defaultDeny,
      reason: 'connect decision allows but names no role (role must be a non-empty string)',
    };
  }
  let database: string;
  if (value.database === undefined || value.database === null) {
    database = input.request.database;
  } else if (isNonEmptyString(value.database)) {
    database = value.database;
  } else {
    return { allow: false, role: null, database: null, rule: ENGINE_RULES.defaultDeny, reason: 'connect decision has a database that is not a non-empty string' };
  }
  return { allow: true, role: value.role, database, rule: ruleOf(value, 'unnamed-rule'), reason: reasonOf(value, 'allowed by policy') };
}

/** Shapes the statement entry point's value; anything malformed is a deny. */
export function toStatementDecision(value: unknown): StatementDecision {
  if (!isPlainObject(value)) {
    return { allow: false, rule: ENGINE_RULES.defaultDeny, reason: `statement policy returned ${describeValue(value)}` };
  }
  if (value.allow !== true) {
    return {
      allow: false,
      rule: ruleOf(value, ENGINE_RULES.defaultDeny),
      reason: reasonOf(value, value.allow === false ? 'statement denied by policy' : 'statement decision has no allow: true'),
    };
  }
  return { allow: true, rule: ruleOf(value, 'unnamed-rule'), reason: reasonOf(value, 'allowed by policy') };
}

export class PolicyEngine {
  readonly revision: string;
  readonly #policy: LoadedPolicy;
  readonly #connectId: number;
  readonly #statementId: number;
  readonly #onError: ((error: RolegateError, entrypoint: PolicyEntrypoint) => void) | undefined;
  /** False after a failed setData: the instance's data region may be half-written. */
  #dataLoaded = false;

  private constructor(policy: LoadedPolicy, revision: string, connectId: number, statementId: number, options: PolicyEngineOptions) {
    this.#policy = policy;
    this.revision = revision;
    this.#connectId = connectId;
    this.#statementId = statementId;
    this.#onError = options.onError;
  }

  /** Instantiates the module with its own bounded memory and loads the data (RG_POLICY_LOAD on failure). */
  static async create(artifact: PolicyArtifact, options: PolicyEngineOptions = {}): Promise<PolicyEngine> {
    const initial = options.initialMemoryPages ?? DEFAULT_INITIAL_MEMORY_PAGES;
    const maximum = options.maximumMemoryPages ?? DEFAULT_MAXIMUM_MEMORY_PAGES;
    if (!Number.isInteger(initial) || !Number.isInteger(maximum) || initial < 1 || maximum < initial || maximum > 65_536) {
      throw new RolegateError('RG_POLICY_LOAD', `invalid policy memory pages: initial ${initial}, maximum ${maximum}`);
    }
    let policy: LoadedPolicy;
    try {
      policy = await loadPolicy(artifact.module, { initial, maximum });
    } catch (thrown) {
      throw new RolegateError('RG_POLICY_LOAD', `cannot instantiate the policy: ${describeThrown(thrown)}`, { cause: thrown });
    }
    const ids: unknown = policy.entrypoints;
    const connectId = isPlainObject(ids) ? ids['rolegate/connect'] : undefined;
    const statementId = isPlainObject(ids) ? ids['rolegate/statement'] : undefined;
    if (typeof connectId !== 'number' || typeof statementId !== 'number') {
      throw new RolegateError(
        'RG_POLICY_LOAD',
        `the policy lacks the entry points rolegate/connect and rolegate/statement (has: ${isPlainObject(ids) ? Object.keys(ids).join(', ') : 'none'})`,
      );
    }
    const engine = new PolicyEngine(policy, artifact.revision, connectId, statementId, options);
    engine.setData(artifact.data);
    return engine;
  }

  /**
   * Replaces the data document (RG_POLICY_LOAD on failure). After a failure the
   * engine denies everything with rule 'policy-error' until a setData succeeds.
   */
  setData(data: unknown): void {
    if (!isPlainObject(data)) throw new RolegateError('RG_POLICY_LOAD', `policy data must be a JSON object, got ${describeValue(data)}`);
    this.#dataLoaded = false;
    try {
      this.#policy.setData(encodeInput(data));
    } catch (thrown) {
      throw new RolegateError('RG_POLICY_LOAD', `cannot load policy data: ${describeThrown(thrown)}`, { cause: thrown });
    }
    this.#dataLoaded = true;
  }

  /** data.rolegate.connect for one client connection. Never throws. */
  connect(input: ConnectInput): ConnectDecision {
    const value = this.#evaluate(input, this.#connectId, 'rolegate/connect');
    if (value instanceof RolegateError) return { allow: false, role: null, database: null, rule: ENGINE_RULES.policyError, reason: POLICY_ERROR_REASON };
    return toConnectDecision(value, input);
  }

  /** data.rolegate.statement for one statement. Never throws. */
  statement(input: StatementInput): StatementDecision {
    const value = this.#evaluate(input, this.#statementId, 'rolegate/statement');
    if (value instanceof RolegateError) return { allow: false, rule: ENGINE_RULES.policyError, reason: POLICY_ERROR_REASON };
    return toStatementDecision(value);
  }

  /** The entry point's value, undefined, or the wrapped failure (already reported to onError). */
  #evaluate(input: unknown, entrypointId: number, entrypoint: PolicyEntrypoint): unknown {
    let failure: RolegateError;
    if (!this.#dataLoaded) {
      failure = new RolegateError('RG_POLICY_EVAL', 'policy evaluation failed: the policy data is not loaded');
    } else {
      try {
        return resultValue(this.#policy.evaluate(encodeInput(input), entrypointId));
      } catch (thrown) {
        // opa-wasm throws strings ("opa_malloc: failed", "<file>:<row>:<col>: var assignment conflict")
        // and plain objects; memory.grow past the maximum throws a RangeError.
        failure = new RolegateError('RG_POLICY_EVAL', `policy evaluation failed: ${describeThrown(thrown)}`, { cause: thrown });
      }
    }
    if (this.#onError !== undefined) {
      try {
        this.#onError(failure, entrypoint);
      } catch {
        // A failing error hook must not turn a deny into a crash.
      }
    }
    return failure;
  }
}
