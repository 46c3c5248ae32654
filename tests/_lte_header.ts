/**
 * Parses `cuda/include/lte.h` (the single source of truth of the native ABI) and checks an FFI
 * symbol table against it, parameter by parameter. Used by tests/ffi_symbols_test.ts; new
 * functions in the header are picked up automatically.
 *
 * C type -> Deno FFI type:
 *   int32_t and every `typedef int32_t x;` of the header (lte_status, lte_dtype) -> i32
 *   int64_t -> i64, uint64_t -> u64, uint32_t -> u32, float -> f32, double -> f64
 *   a pointer -> "buffer" when JS owns the host memory for the call: the parameter name starts with
 *     `host_`, it is a pointer-to-pointer (`T **out`), a `char *`, or a pointer to one of the ABI's
 *     structs (`lte_*_t *` other than `lte_ctx_t *`); otherwise "pointer" (device memory, the context).
 *   A pointer result is "pointer"; `lte_status` results are i32.
 */

/** One parameter of a header declaration. */
export interface CParam {
  /** The declaration as written, whitespace normalised, e.g. `const void *host_src`. */
  decl: string;
  /** The C type, e.g. `const void *`. */
  type: string;
  name: string;
}

/** One `LTE_API` function of the header. */
export interface CFunction {
  name: string;
  result: string;
  params: CParam[];
}

export interface ParsedHeader {
  functions: Map<string, CFunction>;
  /** `typedef <scalar> <name>;` aliases, e.g. lte_status -> int32_t. */
  typedefs: Map<string, string>;
  /** `#define NAME <integer>` values and enum constants, e.g. LTE_STATUS_OK -> 0. */
  constants: Map<string, number>;
}

/** Whitespace normalised, pointer stars bound to the name: `const void *x`, `lte_ctx_t **out`. */
const norm = (s: string) => s.replace(/\s+/g, " ").replace(/\s*(\*+)\s*/g, " $1").trim();

/** Removes comments; keeps line structure irrelevant (declarations may span lines). */
function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
}

function splitParam(raw: string): CParam {
  const decl = norm(raw);
  const m = /^(.*?)(\w+)$/.exec(decl);
  if (!m) throw new Error(`lte.h: cannot parse parameter '${raw}'`);
  return { decl, type: m[1]!.trim(), name: m[2]! };
}

/** Parses every `LTE_API` declaration, the scalar typedefs and the integer constants. */
export function parseHeader(src: string): ParsedHeader {
  const code = stripComments(src);
  const typedefs = new Map<string, string>();
  for (const m of code.matchAll(/typedef\s+((?:unsigned\s+)?\w+)\s+(\w+)\s*;/g)) typedefs.set(m[2]!, m[1]!);
  const constants = new Map<string, number>();
  for (const m of code.matchAll(/#define\s+(LTE_\w+)\s+(-?\d+)\s*$/gm)) constants.set(m[1]!, Number(m[2]));
  for (const m of code.matchAll(/enum\s*\{([^}]*)\}/g)) {
    for (const item of m[1]!.split(",")) {
      const e = /^\s*(\w+)\s*=\s*(-?\d+)\s*$/.exec(item);
      if (e) constants.set(e[1]!, Number(e[2]));
    }
  }
  const functions = new Map<string, CFunction>();
  const body = code.replace(/^\s*#.*$/gm, " ");
  for (const m of body.matchAll(/\bLTE_API\s+([^;(]*?)\b(lte_\w+)\s*\(([^)]*)\)\s*;/g)) {
    const name = m[2]!;
    if (functions.has(name)) throw new Error(`lte.h declares ${name} twice`);
    const list = norm(m[3]!);
    const params = list === "" || list === "void" ? [] : list.split(",").map(splitParam);
    functions.set(name, { name, result: norm(m[1]!), params });
  }
  return { functions, typedefs, constants };
}

const SCALARS: Record<string, string> = {
  int32_t: "i32",
  int64_t: "i64",
  uint64_t: "u64",
  uint32_t: "u32",
  int8_t: "i8",
  uint8_t: "u8",
  int16_t: "i16",
  uint16_t: "u16",
  float: "f32",
  double: "f64",
  size_t: "usize",
};

function scalar(type: string, typedefs: Map<string, string>): string | null {
  const t = type.replace(/\bconst\b/g, "").trim();
  const base = typedefs.get(t) ?? t;
  return SCALARS[base] ?? null;
}

/** The Deno FFI type a header parameter must have, or an explanation of why there is none. */
export function expectedParamType(p: CParam, typedefs: Map<string, string>): string {
  if (p.type.includes("*")) {
    const stars = (p.type.match(/\*/g) ?? []).length;
    const base = p.type.replace(/\*/g, "").replace(/\bconst\b/g, "").trim();
    if (stars >= 2 || base === "char" || p.name.startsWith("host_")) return "buffer";
    if (/^lte_\w+_t$/.test(base) && base !== "lte_ctx_t") return "buffer";
    return "pointer";
  }
  const s = scalar(p.type, typedefs);
  if (s === null) {
    throw new Error(`unknown C type '${p.type}' of parameter ${p.name}: add it to tests/_lte_header.ts`);
  }
  return s;
}

/** The Deno FFI result type of a header function. */
export function expectedResultType(result: string, typedefs: Map<string, string>): string {
  if (result.includes("*")) return "pointer";
  if (result === "void") return "void";
  const s = scalar(result, typedefs);
  if (s === null) throw new Error(`unknown C result type '${result}': add it to tests/_lte_header.ts`);
  return s;
}

/** The symbols.ts entry for a header function, in the house format (printed when one is missing). */
export function formatEntry(f: CFunction, typedefs: Map<string, string>): string {
  const sym: Record<string, string> = { pointer: "P", buffer: "B", i32: "I32", i64: "I64", u64: "U64", f32: "F32" };
  const res = expectedResultType(f.result, typedefs);
  const lines = [`  ${f.name}: {`];
  if (f.params.length === 0) lines.push("    parameters: [],");
  else {
    lines.push("    parameters: [");
    for (const p of f.params) {
      const t = expectedParamType(p, typedefs);
      lines.push(`      ${sym[t] ?? JSON.stringify(t)}, // ${p.decl}`);
    }
    lines.push("    ],");
  }
  lines.push(
    `    result: ${f.result === "lte_status" ? "S" : res === "pointer" ? "P" : JSON.stringify(res)}, // ${f.result}`,
  );
  lines.push("  },");
  return lines.join("\n");
}

interface SymbolDef {
  name?: string;
  parameters: readonly string[];
  result: string;
  nonblocking?: boolean;
}

/**
 * Every disagreement between a symbol table and the header, as readable lines (empty = agree).
 * Entries may alias a header function through `name` (the nonblocking variants).
 */
export function compareTable(header: ParsedHeader, table: Record<string, SymbolDef>): string[] {
  const problems: string[] = [];
  const covered = new Set<string>();
  for (const [key, def] of Object.entries(table)) {
    const cname = def.name ?? key;
    const f = header.functions.get(cname);
    if (!f) {
      problems.push(`${key}: ${cname} is in ffi/symbols.ts but not declared (LTE_API) in cuda/include/lte.h`);
      continue;
    }
    if (def.name === undefined) covered.add(cname);
    if (def.parameters.length !== f.params.length) {
      problems.push(
        `${key}: ${f.params.length} parameters in lte.h (${f.params.map((p) => p.decl).join(", ")}), ` +
          `${def.parameters.length} in ffi/symbols.ts`,
      );
    }
    const n = Math.min(def.parameters.length, f.params.length);
    for (let i = 0; i < n; i++) {
      const p = f.params[i]!;
      let want: string;
      try {
        want = expectedParamType(p, header.typedefs);
      } catch (e) {
        problems.push(`${key}: ${(e as Error).message}`);
        continue;
      }
      if (def.parameters[i] !== want) {
        problems.push(
          `${key}: parameter ${i} '${p.decl}' must be "${want}", ffi/symbols.ts has "${def.parameters[i]}"`,
        );
      }
    }
    let wantResult: string;
    try {
      wantResult = expectedResultType(f.result, header.typedefs);
    } catch (e) {
      problems.push(`${key}: ${(e as Error).message}`);
      continue;
    }
    if (def.result !== wantResult) {
      problems.push(`${key}: result '${f.result}' must be "${wantResult}", ffi/symbols.ts has "${def.result}"`);
    }
  }
  for (const f of header.functions.values()) {
    if (!covered.has(f.name)) {
      problems.push(
        `${f.name} is declared in cuda/include/lte.h but has no entry in ffi/symbols.ts; add:\n` +
          formatEntry(f, header.typedefs),
      );
    }
  }
  return problems;
}

/**
 * Checks the house format of the table's source text: within each entry, one parameter per line
 * whose comment is the header's C declaration of that parameter (whitespace normalised).
 */
export function checkComments(source: string, header: ParsedHeader, table: Record<string, SymbolDef>): string[] {
  const problems: string[] = [];
  for (const [key, def] of Object.entries(table)) {
    const f = header.functions.get(def.name ?? key);
    if (!f || f.params.length === 0) continue;
    const start = source.search(new RegExp(`^  ${key}: \\{$`, "m"));
    if (start < 0) {
      problems.push(`${key}: entry not written as '  ${key}: {' on its own line`);
      continue;
    }
    const end = source.indexOf("\n  },", start);
    const block = source.slice(start, end < 0 ? undefined : end);
    const open = block.indexOf("parameters: [\n");
    const close = block.indexOf("\n    ],", open);
    if (open < 0 || close < 0) {
      problems.push(`${key}: parameters not written one per line ('parameters: [' then one line each)`);
      continue;
    }
    const lines = block.slice(open + "parameters: [\n".length, close).split("\n");
    const comments = lines.map((l) => /,\s*\/\/\s*(.*)$/.exec(l)?.[1]?.trim() ?? null);
    if (lines.length !== f.params.length) {
      problems.push(`${key}: ${lines.length} parameter lines for ${f.params.length} parameters`);
      continue;
    }
    f.params.forEach((p, i) => {
      const c = comments[i];
      if (c === null || c === undefined || norm(c) !== p.decl) {
        problems.push(`${key}: parameter ${i} must carry the comment '// ${p.decl}', found: ${lines[i]!.trim()}`);
      }
    });
  }
  return problems;
}
