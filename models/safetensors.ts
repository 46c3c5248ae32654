/**
 * Hugging Face safetensors files: read (header eagerly, tensor bytes lazily by offset) and write
 * (atomically, laid out exactly as the `safetensors` crate lays them out).
 *
 * Format: an 8-byte little-endian u64 `N`, then `N` bytes of UTF-8 JSON
 * `{"__metadata__": {string: string}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}}`
 * padded with spaces so that `8 + N` is a multiple of 8, then the data buffer; offsets are relative
 * to the start of the buffer, tensors are little-endian, row-major.
 *
 * Writing follows `safetensors::serialize`: tensors ordered by descending dtype (the crate's enum
 * order, which is increasing alignment: F64/I64 > F32/I32 > BF16/F16 > ...) then by name (bytewise),
 * data contiguous in that order, compact JSON with `__metadata__` first, keys `dtype`, `shape`,
 * `data_offsets`. Metadata keys are written sorted (the crate's HashMap order is arbitrary).
 *
 * The host is assumed little-endian (x86-64, aarch64), as the typed arrays are used as byte views.
 *
 * @module
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { writeFileAtomicSync } from "../io/atomic.ts";

/** Dtypes known to the safetensors format (the crate's enum, in its order). */
export const DTYPE_ORDER = [
  "BOOL",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "F64",
  "I64",
  "U64",
] as const;

/** A dtype string of a safetensors header that this module can read. */
export type Dtype =
  | "BOOL"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "F64"
  | "I64"
  | "U64";

/** Bytes per element of every readable dtype (sub-byte F4/F6 are refused as unsupported). */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The dtypes `writeSafetensors` writes. */
export type WriteDtype = "F32" | "F16" | "BF16" | "I32" | "I64" | "U8";

/** HF refuses headers above 100 MB; so do we (guards against garbage lengths). */
export const MAX_HEADER_BYTES = 100_000_000;

/** A problem with a safetensors file; `tensor` is set when one tensor entry is at fault. */
export class SafetensorsError extends Error {
  readonly file: string;
  readonly tensor: string | undefined;
  constructor(file: string, message: string, tensor?: string, options?: ErrorOptions) {
    super(`${file}: ${tensor !== undefined ? `tensor "${tensor}": ` : ""}${message}`, options);
    this.name = "SafetensorsError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** One tensor entry of a header, validated. `begin`/`end` are absolute file positions. */
export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
  byteLength: number;
  /** Offsets relative to the data buffer, as in the header. */
  dataOffsets: [number, number];
}

/** A parsed, validated safetensors header. */
export interface SafetensorsHeader {
  file: string;
  /** Value of `N` (header bytes after the 8-byte length, padding included). */
  headerLength: number;
  /** File position of the data buffer (8 + N). */
  dataStart: number;
  /** Bytes in the data buffer. */
  dataLength: number;
  metadata: Record<string, string>;
  /** Tensors in file order (ascending offset). */
  tensors: Map<string, TensorInfo>;
}

function isDtype(s: string): s is Dtype {
  return Object.hasOwn(DTYPE_SIZE, s);
}

function readFully(fd: number, buf: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const chunk = Math.min(buf.length - done, 1 << 30);
    const n = readSync(fd, buf, done, chunk, position + done);
    if (n <= 0) throw new SafetensorsError(file, `unexpected end of file while reading ${what}`);
    done += n;
  }
}

/**
 * Validates a header given its JSON bytes and the file size. Exported for tests and tools that
 * already hold the bytes; `readSafetensorsHeader` is the usual entry.
 */
export function parseSafetensorsHeader(file: string, headerBytes: Uint8Array, fileSize: number): SafetensorsHeader {
  const headerLength = headerBytes.length;
  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch (e) {
    throw new SafetensorsError(file, "header is not valid UTF-8", undefined, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const preview = text.slice(0, 60).replace(/\s+/g, " ");
    throw new SafetensorsError(
      file,
      `header is not valid JSON (${(e as Error).message}); it starts with ${JSON.stringify(preview)}`,
      undefined,
      {
        cause: e,
      },
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new SafetensorsError(file, "header JSON is not an object");
  }
  const metadata: Record<string, string> = {};
  const entries: [string, TensorInfo][] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw new SafetensorsError(file, `"__metadata__" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(file, `"__metadata__"."${k}" must be a string, got ${JSON.stringify(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    entries.push([name, validateEntry(file, name, value, dataLength)]);
  }
  // Ascending offset = file order; then reject overlaps (empty tensors overlap nothing).
  entries.sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let prevEnd = 0, prevName = "";
  for (const [name, info] of entries) {
    const [begin, end] = info.dataOffsets;
    if (begin === end) continue;
    if (begin < prevEnd) {
      throw new SafetensorsError(
        file,
        `data_offsets [${begin}, ${end}] overlap tensor "${prevName}" (which ends at ${prevEnd})`,
        name,
      );
    }
    prevEnd = end;
    prevName = name;
  }
  return { file, headerLength, dataStart, dataLength, metadata, tensors: new Map(entries) };
}

function validateEntry(file: string, name: string, value: unknown, dataLength: number): TensorInfo {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SafetensorsError(file, "entry is not an object with dtype, shape and data_offsets", name);
  }
  const v = value as Record<string, unknown>;
  for (const key of ["dtype", "shape", "data_offsets"]) {
    if (!(key in v)) throw new SafetensorsError(file, `entry is missing "${key}"`, name);
  }
  if (typeof v.dtype !== "string") {
    throw new SafetensorsError(file, `"dtype" must be a string, got ${JSON.stringify(v.dtype)}`, name);
  }
  if (!isDtype(v.dtype)) {
    throw new SafetensorsError(
      file,
      `unsupported dtype "${v.dtype}" (supported: ${Object.keys(DTYPE_SIZE).join(", ")})`,
      name,
    );
  }
  const shape = v.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(
      file,
      `"shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
      name,
    );
  }
  const off = v.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(
      file,
      `"data_offsets" must be [begin, end] non-negative integers, got ${JSON.stringify(off)}`,
      name,
    );
  }
  const [begin, end] = off as [number, number];
  if (begin > end) throw new SafetensorsError(file, `data_offsets [${begin}, ${end}] has begin > end`, name);
  if (end > dataLength) {
    throw new SafetensorsError(
      file,
      `data_offsets [${begin}, ${end}] lie outside the data buffer (${dataLength} bytes)`,
      name,
    );
  }
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  const want = numel * DTYPE_SIZE[v.dtype];
  if (end - begin !== want) {
    throw new SafetensorsError(
      file,
      `byte length ${end - begin} (data_offsets [${begin}, ${end}]) != ${want} = prod([${shape.join(", ")}]) * ${
        DTYPE_SIZE[v.dtype]
      } bytes (${v.dtype})`,
      name,
    );
  }
  return { dtype: v.dtype, shape: [...(shape as number[])], byteLength: want, dataOffsets: [begin, end] };
}

function readHeaderFd(fd: number, file: string): SafetensorsHeader {
  const size = fstatSync(fd).size;
  if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, shorter than the 8-byte header length`);
  const lenBuf = new Uint8Array(8);
  readFully(fd, lenBuf, 0, file, "the header length");
  const n64 = new DataView(lenBuf.buffer).getBigUint64(0, true);
  if (n64 > BigInt(size - 8)) {
    throw new SafetensorsError(file, `truncated safetensors header: header says ${n64} bytes but file has ${size}`);
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) {
    throw new SafetensorsError(file, `header of ${n} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (n < 2) throw new SafetensorsError(file, `header length ${n} is too small to hold a JSON object`);
  const header = new Uint8Array(n);
  readFully(fd, header, 8, file, "the header");
  return parseSafetensorsHeader(file, header, size);
}

/** Reads and validates only the header (8 bytes + N), never the tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new SafetensorsError(path, `cannot open: ${(e as Error).message}`, undefined, { cause: e });
  }
  try {
    return readHeaderFd(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** An opened safetensors file: the header in memory, tensor bytes read on demand by offset. */
export class SafetensorsFile {
  readonly path: string;
  readonly header: SafetensorsHeader;
  constructor(path: string, header: SafetensorsHeader) {
    this.path = path;
    this.header = header;
  }
  /** `__metadata__` of the file (empty object if absent). */
  get metadata(): Record<string, string> {
    return this.header.metadata;
  }
  /** Tensor names in file order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }
  has(name: string): boolean {
    return this.header.tensors.has(name);
  }
  /** dtype, shape and byte length of a tensor. */
  info(name: string): { dtype: Dtype; shape: number[]; byteLength: number } {
    const t = this.entry(name);
    return { dtype: t.dtype, shape: [...t.shape], byteLength: t.byteLength };
  }
  private entry(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new SafetensorsError(this.path, `no such tensor (the file has ${this.header.tensors.size})`, name);
    return t;
  }
  /** The tensor's bytes, in a fresh (hence aligned) buffer. */
  getRaw(name: string): Uint8Array {
    const t = this.entry(name);
    const out = new Uint8Array(t.byteLength);
    if (t.byteLength === 0) return out;
    const fd = openSync(this.path, "r");
    try {
      const size = fstatSync(fd).size;
      if (size !== this.header.dataStart + this.header.dataLength) {
        throw new SafetensorsError(this.path, `file changed size since its header was read (${size} bytes now)`, name);
      }
      readFully(fd, out, this.header.dataStart + t.dataOffsets[0], this.path, `tensor "${name}"`);
    } finally {
      closeSync(fd);
    }
    return out;
  }
  /** The tensor as float32: F32 as stored, F16/BF16 converted exactly, F64/integers by value. */
  getF32(name: string): Float32Array {
    const t = this.entry(name);
    const raw = this.getRaw(name);
    switch (t.dtype) {
      case "F32":
        return new Float32Array(raw.buffer, 0, raw.length / 4);
      case "BF16":
        return bf16ToF32(new Uint16Array(raw.buffer, 0, raw.length / 2));
      case "F16":
        return f16ToF32(new Uint16Array(raw.buffer, 0, raw.length / 2));
      case "F64":
        return Float32Array.from(new Float64Array(raw.buffer));
      case "I32":
        return Float32Array.from(new Int32Array(raw.buffer));
      case "U32":
        return Float32Array.from(new Uint32Array(raw.buffer));
      case "I16":
        return Float32Array.from(new Int16Array(raw.buffer));
      case "U16":
        return Float32Array.from(new Uint16Array(raw.buffer));
      case "I8":
        return Float32Array.from(new Int8Array(raw.buffer));
      case "U8":
      case "BOOL":
        return Float32Array.from(raw);
      case "I64":
        return Float32Array.from(new BigInt64Array(raw.buffer), (x) => Number(x));
      case "U64":
        return Float32Array.from(new BigUint64Array(raw.buffer), (x) => Number(x));
      default:
        throw new SafetensorsError(this.path, `cannot convert dtype ${t.dtype} to float32`, name);
    }
  }
  /** An integer tensor (I32, or I64/U32/I16/U16/I8/U8 whose values fit) as Int32Array. */
  getI32(name: string): Int32Array {
    const t = this.entry(name);
    const raw = this.getRaw(name);
    switch (t.dtype) {
      case "I32":
        return new Int32Array(raw.buffer, 0, raw.length / 4);
      case "I64": {
        const src = new BigInt64Array(raw.buffer);
        const out = new Int32Array(src.length);
        for (let i = 0; i < src.length; i++) {
          const x = src[i]!;
          if (x > 2147483647n || x < -2147483648n) {
            throw new SafetensorsError(this.path, `I64 value ${x} at index ${i} does not fit in int32`, name);
          }
          out[i] = Number(x);
        }
        return out;
      }
      case "I16":
        return Int32Array.from(new Int16Array(raw.buffer));
      case "U16":
        return Int32Array.from(new Uint16Array(raw.buffer));
      case "I8":
        return Int32Array.from(new Int8Array(raw.buffer));
      case "U8":
      case "BOOL":
        return Int32Array.from(raw);
      default:
        throw new SafetensorsError(this.path, `dtype ${t.dtype} is not an integer dtype convertible to int32`, name);
    }
  }
}

/**
 * Opens a safetensors file: reads and validates the header now; tensor data is read lazily by
 * offset on `getRaw`/`getF32`, so opening a multi-GB file is cheap.
 */
export function readSafetensors(path: string): SafetensorsFile {
  return new SafetensorsFile(path, readSafetensorsHeader(path));
}

// ---------------------------------------------------------------------------------------------
// Half-precision conversions

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 bit pattern -> bfloat16 bits, round-to-nearest-even; NaN stays a (quiet) NaN. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x0040) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bit pattern -> float16 bits, round-to-nearest-even, with subnormals, overflow -> inf. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: +-0
    const m24 = mant | 0x800000;
    const shift = 14 - e; // 14..24
    let m = m24 >>> shift;
    const rem = m24 & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (m & 1) !== 0)) m++;
    return sign | m; // m == 0x400 is the smallest normal, encoded correctly
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // carry may reach inf: correct
  return h;
}

/** float16 bits -> number (exact). */
export function f16BitsToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m !== 0 ? NaN : s * Infinity;
  return s * (1024 + m) * 2 ** (e - 25);
}

/** number -> float16 bits (via float32 rounding first, as torch does for f32 tensors). */
export function numberToF16Bits(v: number): number {
  f32Scratch[0] = v;
  return f32BitsToF16Bits(u32Scratch[0]!);
}

/** number -> bfloat16 bits (via float32). */
export function numberToBf16Bits(v: number): number {
  f32Scratch[0] = v;
  return f32BitsToBf16Bits(u32Scratch[0]!);
}

/** float32 array -> bfloat16 bit patterns (round-to-nearest-even). */
export function f32ToBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  return out;
}

/** float32 array -> float16 bit patterns (round-to-nearest-even). */
export function f32ToF16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  return out;
}

/** bfloat16 bit patterns -> float32 (exact: the bits shifted up). */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

let f16Table: Float32Array | undefined;

/** float16 bit patterns -> float32 (exact, via a 64K-entry table). */
export function f16ToF32(src: Uint16Array): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToNumber(h);
  }
  const t = f16Table;
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

/** A tensor to write. F16/BF16 take float values (converted, RNE) or a Uint16Array of raw bits. */
export interface WriteTensor {
  dtype: WriteDtype;
  shape: number[];
  data: Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array | ArrayLike<number>;
}

function tensorBytes(file: string, name: string, t: WriteTensor): Uint8Array {
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(file, `shape must be non-negative integers, got ${JSON.stringify(t.shape)}`, name);
  }
  const numel = t.shape.reduce((a, b) => a * b, 1);
  const d = t.data;
  if (d.length !== numel) {
    throw new SafetensorsError(
      file,
      `data has ${d.length} elements but shape [${t.shape.join(", ")}] needs ${numel}`,
      name,
    );
  }
  const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const asF32 = () => (d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>));
  switch (t.dtype) {
    case "F32":
      return bytes(asF32());
    case "BF16":
      return bytes(d instanceof Uint16Array ? d : f32ToBf16(asF32()));
    case "F16":
      return bytes(d instanceof Uint16Array ? d : f32ToF16(asF32()));
    case "I32": {
      if (d instanceof Int32Array) return bytes(d);
      const out = new Int32Array(numel);
      for (let i = 0; i < numel; i++) {
        const x = Number((d as ArrayLike<number>)[i]);
        if (!Number.isInteger(x) || x < -2147483648 || x > 2147483647) {
          throw new SafetensorsError(file, `value ${x} at index ${i} is not an int32`, name);
        }
        out[i] = x;
      }
      return bytes(out);
    }
    case "I64":
      return bytes(d instanceof BigInt64Array ? d : BigInt64Array.from(d as ArrayLike<number>, (x) => BigInt(x)));
    case "U8":
      return d instanceof Uint8Array ? d : Uint8Array.from(d as ArrayLike<number>);
    default:
      throw new SafetensorsError(
        file,
        `cannot write dtype ${String((t as WriteTensor).dtype)} (writable: F32, F16, BF16, I32, I64, U8)`,
        name,
      );
  }
}

function compareBytes(a: string, b: string): number {
  // Rust's String ordering is bytewise over UTF-8.
  const ea = new TextEncoder().encode(a), eb = new TextEncoder().encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) if (ea[i] !== eb[i]) return ea[i]! - eb[i]!;
  return ea.length - eb.length;
}

/** Header bytes (8-byte length + padded JSON) and the tensor order for `tensors`, as HF builds them. */
export function buildSafetensorsHeader(
  tensors: Record<string, { dtype: string; shape: number[]; byteLength: number }>,
  metadata?: Record<string, string>,
): { bytes: Uint8Array; order: string[] } {
  const rank = (d: string) => (DTYPE_ORDER as readonly string[]).indexOf(d);
  const order = Object.keys(tensors).sort((a, b) =>
    rank(tensors[b]!.dtype) - rank(tensors[a]!.dtype) || compareBytes(a, b)
  );
  let json = "{";
  const parts: string[] = [];
  if (metadata && Object.keys(metadata).length > 0) {
    const keys = Object.keys(metadata).sort(compareBytes);
    parts.push(`"__metadata__":{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(",")}}`);
  }
  let offset = 0;
  for (const name of order) {
    const t = tensors[name]!;
    parts.push(
      `${JSON.stringify(name)}:{"dtype":${JSON.stringify(t.dtype)},"shape":[${
        t.shape.join(",")
      }],"data_offsets":[${offset},${offset + t.byteLength}]}`,
    );
    offset += t.byteLength;
  }
  json += parts.join(",") + "}";
  const enc = new TextEncoder().encode(json);
  const padded = enc.length + ((8 - (enc.length % 8)) % 8);
  const bytes = new Uint8Array(8 + padded).fill(0x20);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(enc, 8);
  return { bytes, order };
}

/**
 * Writes a safetensors file atomically: a temp file in the same directory, fsync, rename (then a
 * best-effort fsync of the directory). Metadata values must be strings (HF's rule).
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, WriteTensor>,
  metadata?: Record<string, string>,
): void {
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new SafetensorsError(path, `metadata "${k}" must be a string, got ${typeof v}`);
    }
  }
  if ("__metadata__" in tensors) {
    throw new SafetensorsError(path, `"__metadata__" is reserved and cannot name a tensor`);
  }
  const data = new Map<string, Uint8Array>();
  const infos: Record<string, { dtype: string; shape: number[]; byteLength: number }> = {};
  for (const [name, t] of Object.entries(tensors)) {
    const b = tensorBytes(path, name, t);
    data.set(name, b);
    infos[name] = { dtype: t.dtype, shape: t.shape, byteLength: b.byteLength };
  }
  const { bytes: header, order } = buildSafetensorsHeader(infos, metadata);
  try {
    writeFileAtomicSync(path, [header, ...order.map((name) => data.get(name)!)]);
  } catch (e) {
    throw new SafetensorsError(path, `write failed: ${(e as Error).message}`, undefined, { cause: e });
  }
}

export { fsyncDir } from "../io/atomic.ts";
