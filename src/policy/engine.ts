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
  onError?: (error: RolegateError, entrypoint: PolicyEntrypoint, call: EvaluationCall) => void;
  /**
   * Called synchronously with each line a Rego print() writes (only in wasm
   * built with `opa build --wasm-include-print`; opa drops print calls otherwise).
   */
  onPrint?: (line: string, call: EvaluationCall) => void;
}

/** The evaluation a failure or a print() line came from, for the log line (never part of the input). */
export interface EvaluationCall {
  readonly entrypoint: PolicyEntrypoint;
  readonly input: ConnectInput | StatementInput;
  /** The session that asked, when the caller named it. */
  readonly sessionId: string | undefined;
}

/** One print() call writes at most this many lines (an operand with several values multiplies them). */
export const MAX_PRINT_LINES_PER_CALL = 16;

/**
 * print()'s operands as OPA formats them: opa-wasm hands the builtin
 * `internal.print` one array holding each operand's set of values; a line per
 * combination of values, joined by spaces, strings bare, anything else as
 * JSON, an operand without a value (undefined) as <undefined>.
 */
export function printLines(operands: unknown, maxLines = MAX_PRINT_LINES_PER_CALL): string[] {
  if (!Array.isArray(operands)) return [];
  let lines: string[] = [''];
  operands.forEach((operand: unknown, index) => {
    const values = Array.isArray(operand) && operand.length > 0 ? operand.map((v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v))) : ['<undefined>'];
    const next: string[] = [];
    for (const line of lines) {
      for (const value of values) {
        if (next.length < maxLines) next.push(index === 0 ? value : `${line} ${value}`);
      }
    }
    lines = next;
  });
  return operands.length === 0 ? [] : lines;
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

function describeJson(value: unknown): string {
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `the ${typeof value} ${JSON.stringify(value) ?? 'undefined'}`;
}

/**
 * What is wrong with an entry point's answer, for the build-time smoke test
 * (the runtime shaping above turns the same answers into denies). An
 * undefined answer is fine: it is a deny. Otherwise the answer must be an
 * object with a boolean `allow`, a non-empty string `rule` and a string
 * `reason`; a connect answer's `role` is a non-empty string when it allows and
 * a string or null otherwise, its `database` a non-empty string or null.
 * Other keys are left alone (later contract versions add some).
 */
export function decisionProblems(entrypoint: PolicyEntrypoint, value: unknown): string[] {
  if (value === undefined) return [];
  if (!isPlainObject(value)) return [`the answer is ${describeJson(value)}, not an object with allow, rule and reason`];
  const problems: string[] = [];
  if (!('allow' in value)) {
    const keys = Object.keys(value).sort();
    problems.push(`the answer has no allow (keys: ${keys.length === 0 ? 'none' : keys.join(', ')}): every answer needs allow: true or allow: false`);
  } else if (typeof value.allow !== 'boolean') {
    problems.push(`allow is ${describeJson(value.allow)}, not a boolean`);
  }
  if (!('rule' in value)) problems.push('the answer has no rule (a non-empty string naming the rule that decided)');
  else if (!isNonEmptyString(value.rule)) problems.push(`rule is ${describeJson(value.rule)}, not a non-empty string`);
  if (!('reason' in value)) problems.push('the answer has no reason (a string)');
  else if (typeof value.reason !== 'string') problems.push(`reason is ${describeJson(value.reason)}, not a string`);
  if (entrypoint === 'rolegate/connect') {
    if (value.allow === true && !isNonEmptyString(value.role)) {
      problems.push(`an allowing connect answer needs role (a non-empty string), got ${'role' in value ? describeJson(value.role) : 'none'}`);
    } else if (value.allow !== true && value.role !== undefined && value.role !== null && typeof value.role !== 'string') {
      problems.push(`role is ${describeJson(value.role)}, not a string or null`);
    }
    if (value.database !== undefined && value.database !== null && !isNonEmptyString(value.database)) {
      problems.push(`database is ${describeJson(value.database)}, not a non-empty string or null`);
    }
  }
  return problems;
}

export class PolicyEngine {
  readonly revision: string;
  readonly #policy: LoadedPolicy;
  readonly #connectId: number;
  readonly #statementId: number;
  readonly #onError: PolicyEngineOptions['onError'];
  readonly #onPrint: PolicyEngineOptions['onPrint'];
  // The evaluation in progress (evaluate is synchronous), for the print hook.
  #callEntrypoint: PolicyEntrypoint = 'rolegate/statement';
  #callInput: ConnectInput | StatementInput | null = null;
  #callSession: string | undefined = undefined;
  /** False after a failed setData: the instance's data region may be half-written. */
  #dataLoaded = false;

  private constructor(policy: LoadedPolicy, revision: string, connectId: number, statementId: number, options: PolicyEngineOptions) {
    this.#policy = policy;
    this.revision = revision;
    this.#connectId = connectId;
    this.#statementId = statementId;
    this.#onError = options.onError;
    this.#onPrint = options.onPrint;
  }

  /** Instantiates the module with its own bounded memory and loads the data (RG_POLICY_LOAD on failure). */
  static async create(artifact: PolicyArtifact, options: PolicyEngineOptions = {}): Promise<PolicyEngine> {
    const initial = options.initialMemoryPages ?? DEFAULT_INITIAL_MEMORY_PAGES;
    const maximum = options.maximumMemoryPages ?? DEFAULT_MAXIMUM_MEMORY_PAGES;
    if (!Number.isInteger(initial) || !Number.isInteger(maximum) || initial < 1 || maximum < initial || maximum > 65_536) {
      throw new RolegateError('RG_POLICY_LOAD', `invalid policy memory pages: initial ${initial}, maximum ${maximum}`);
    }
    let policy: LoadedPolicy;
    // print() compiles to a call of the builtin internal.print, served here;
    // it must return nothing (undefined), as OPA's own does.
    let engine: PolicyEngine | null = null;
    const builtins = {
      'internal.print': (operands: unknown): undefined => {
        if (engine !== null) engine.#print(operands);
        return undefined;
      },
    };
    try {
      policy = await loadPolicy(artifact.module, { initial, maximum }, builtins);
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
    engine = new PolicyEngine(policy, artifact.revision, connectId, statementId, options);
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

  /** data.rolegate.connect for one client connection. Never throws. `sessionId` only names the session in log lines. */
  connect(input: ConnectInput, sessionId?: string): ConnectDecision {
    const value = this.#evaluate(input, this.#connectId, 'rolegate/connect', sessionId);
    if (value instanceof RolegateError) return { allow: false, role: null, database: null, rule: ENGINE_RULES.policyError, reason: POLICY_ERROR_REASON };
    return toConnectDecision(value, input);
  }

  /** data.rolegate.statement for one statement. Never throws. `sessionId` only names the session in log lines. */
  statement(input: StatementInput, sessionId?: string): StatementDecision {
    const value = this.#evaluate(input, this.#statementId, 'rolegate/statement', sessionId);
    if (value instanceof RolegateError) return { allow: false, rule: ENGINE_RULES.policyError, reason: POLICY_ERROR_REASON };
    return toStatementDecision(value);
  }

  /** The entry point's value, undefined, or the wrapped failure (already reported to onError). */
  #evaluate(input: ConnectInput | StatementInput, entrypointId: number, entrypoint: PolicyEntrypoint, sessionId: string | undefined): unknown {
    let failure: RolegateError;
    if (!this.#dataLoaded) {
      failure = new RolegateError('RG_POLICY_EVAL', 'policy evaluation failed: the policy data is not loaded');
    } else {
      this.#callEntrypoint = entrypoint;
      this.#callInput = input;
      this.#callSession = sessionId;
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
        this.#onError(failure, entrypoint, { entrypoint, input, sessionId });
      } catch {
        // A failing error hook must not turn a deny into a crash.
      }
    }
    return failure;
  }

  /** internal.print from inside an evaluation: each line to onPrint with the evaluation it came from. */
  #print(operands: unknown): void {
    const input = this.#callInput;
    if (this.#onPrint === undefined || input === null) return;
    try {
      const call: EvaluationCall = { entrypoint: this.#callEntrypoint, input, sessionId: this.#callSession };
      for (const line of printLines(operands)) this.#onPrint(line, call);
    } catch {
      // A failing print hook must not fail the evaluation.
    }
  }
}
