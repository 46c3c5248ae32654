/**
 * cuda/include/lte.h is the single source of truth of the native ABI: every `LTE_API` function
 * must have an entry in ffi/symbols.ts whose parameter and result types match the C declaration
 * one by one (i32/i64/u64/f32, pointer vs buffer), written one parameter per line with its C
 * declaration as the comment. The constants (ABI version, status, dtype, option codes) must match
 * too. New functions are picked up from the header automatically.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { DTypeCode, LTE_ABI_VERSION, Option, Status, SYMBOLS } from "../ffi/symbols.ts";
import { checkComments, compareTable, parseHeader } from "./_lte_header.ts";

const headerSrc = readFileSync(new URL("../cuda/include/lte.h", import.meta.url), "utf8");
const tableSrc = readFileSync(new URL("../ffi/symbols.ts", import.meta.url), "utf8");
const header = parseHeader(headerSrc);
type Table = Parameters<typeof compareTable>[1];
const table = SYMBOLS as unknown as Table;

Deno.test("the header parser reads every LTE_API declaration with its parameter types", () => {
  const declared = [...headerSrc.matchAll(/\bLTE_API\s+[^;]*?\blte_\w+\s*\(/g)].length;
  assert.equal(header.functions.size, declared, "some LTE_API declarations were not parsed");
  assert.ok(header.functions.size >= 59, `parsed only ${header.functions.size} functions`);
  const mm = header.functions.get("lte_matmul")!;
  assert.equal(mm.result, "lte_status");
  assert.deepEqual(mm.params.map((p) => p.decl).slice(0, 6), [
    "lte_ctx_t *ctx",
    "lte_dtype dtype",
    "const void *a",
    "const void *b",
    "void *c",
    "int32_t batch",
  ]);
  assert.equal(header.functions.get("lte_abi_version")!.params.length, 0);
  assert.equal(header.functions.get("lte_mem_alloc")!.params[2]!.decl, "void **out");
  assert.equal(header.typedefs.get("lte_status"), "int32_t");
});

Deno.test("every ffi/symbols.ts entry matches lte.h parameter by parameter", () => {
  const problems = compareTable(header, table);
  assert.deepEqual(problems, [], "\n" + problems.join("\n"));
});

Deno.test("ffi/symbols.ts writes one parameter per line with its C declaration as the comment", () => {
  const problems = checkComments(tableSrc, header, table);
  assert.deepEqual(problems, [], "\n" + problems.join("\n"));
});

Deno.test("the checker catches a type swap, a missing function and a stale entry", () => {
  // Only problems the mutation adds count (the tree may hold a header entry whose table entry is
  // still being written; the test above reports those).
  const baseline = new Set(compareTable(header, table));
  const compare = (h: typeof header, t: Table) => compareTable(h, t).filter((p) => !baseline.has(p));
  const mutate = (key: string, f: (d: { parameters: string[]; result: string }) => void): Table => {
    const copy = JSON.parse(JSON.stringify(SYMBOLS)) as Record<string, { parameters: string[]; result: string }>;
    f(copy[key]!);
    return copy as unknown as Table;
  };
  // i32 <-> i64 (lte_sum_rows: int64_t cols is parameter 5, int32_t accumulate parameter 6)
  const swap = compare(header, mutate("lte_sum_rows", (d) => [d.parameters[5], d.parameters[6]] = ["i32", "i64"]));
  assert.equal(swap.length, 2, swap.join("\n"));
  assert.match(swap[0]!, /lte_sum_rows: parameter 5 'int64_t cols' must be "i64", ffi\/symbols.ts has "i32"/);
  // u64 vs i64, pointer vs buffer, f32 vs i32, the result type
  assert.match(
    compare(header, mutate("lte_mem_alloc", (d) => d.parameters[1] = "i64"))[0]!,
    /'uint64_t bytes' must be "u64"/,
  );
  assert.match(
    compare(header, mutate("lte_mem_read", (d) => d.parameters[1] = "pointer"))[0]!,
    /'void \*host_dst' must be "buffer"/,
  );
  assert.match(
    compare(header, mutate("lte_mem_copy", (d) => d.parameters[1] = "buffer"))[0]!,
    /'void \*dst' must be "pointer"/,
  );
  assert.match(
    compare(header, mutate("lte_fill", (d) => d.parameters[4] = "i32"))[0]!,
    /'float value' must be "f32"/,
  );
  assert.match(
    compare(header, mutate("lte_abi_version", (d) => d.result = "i32"))[0]!,
    /result 'uint32_t' must be "u32"/,
  );
  // the async alias is checked against the function it names
  assert.match(
    compare(header, mutate("lte_mem_read_async", (d) => d.parameters[3] = "i64"))[0]!,
    /lte_mem_read_async: parameter 3/,
  );
  // missing and extra functions
  const missing = JSON.parse(JSON.stringify(SYMBOLS));
  delete missing.lte_argmax;
  const m = compare(header, missing);
  assert.equal(m.length, 1);
  assert.match(m[0]!, /lte_argmax is declared in cuda\/include\/lte.h but has no entry/);
  assert.match(m[0]!, /P, \/\/ lte_ctx_t \*ctx\n {6}I32, \/\/ lte_dtype dtype/); // the entry to paste
  const extra = { ...SYMBOLS, lte_gone: { parameters: [], result: "i32" } } as unknown as Table;
  assert.match(compare(header, extra)[0]!, /lte_gone is in ffi\/symbols.ts but not declared/);
  // a new header declaration is picked up without touching the test
  const grown = parseHeader(
    headerSrc.replace(
      "#ifdef __cplusplus\n}",
      "LTE_API lte_status lte_new_op(lte_ctx_t *ctx, int64_t n);\n#ifdef __cplusplus\n}",
    ),
  );
  assert.match(compare(grown, table).join("\n"), /lte_new_op is declared/);
  // the comment format
  const badComment = tableSrc.replace("      I64, // int64_t cols\n", "      I64, // int32_t cols\n");
  assert.ok(checkComments(badComment, header, table).some((p) => /must carry the comment '\/\/ int64_t cols'/.test(p)));
});

Deno.test("ABI version, status, dtype and option codes match the header", () => {
  assert.equal(header.constants.get("LTE_ABI_VERSION"), LTE_ABI_VERSION);
  const check = (prefix: string, table: Record<string, number>) => {
    const fromHeader = [...header.constants].filter(([k]) => k.startsWith(prefix));
    assert.ok(fromHeader.length > 0, `no ${prefix}* constants in lte.h`);
    for (const [k, v] of fromHeader) {
      assert.equal(table[k.slice(prefix.length)], v, `${k} = ${v} in lte.h`);
    }
    assert.equal(Object.keys(table).length, fromHeader.length, `${prefix}*: the tables have different sizes`);
  };
  check("LTE_STATUS_", Status);
  check("LTE_OPTION_", Option);
  check("LTE_DTYPE_", Object.fromEntries(Object.entries(DTypeCode).map(([k, v]) => [k.toUpperCase(), v])));
});
