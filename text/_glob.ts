/**
 * A small glob for corpus specs: `*` (any run of characters within one path segment), `?` (one
 * character), `**` (zero or more whole directories). No braces or character classes. As in most
 * shells, `*`/`?` do not match a leading `.`, and `**` does not descend into dot-directories or
 * `node_modules` unless the pattern names them. Results are absolute file paths (directories are
 * not matched), sorted by their path relative to the base, codepoint order, so expansion is
 * deterministic across machines.
 *
 * @module
 */
import { readdirSync, statSync } from "node:fs";
import { isAbsolute, join, resolve, sep } from "node:path";

/** True if the string contains glob metacharacters. */
export function hasGlob(pattern: string): boolean {
  return /[*?]/.test(pattern);
}

function segmentRegex(seg: string): RegExp {
  let re = "";
  for (const ch of seg) {
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function dirId(p: string): string | null {
  try {
    const st = statSync(p);
    return st.ino === null ? null : `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/**
 * Expands `pattern` (relative to `baseDir` unless absolute) to the sorted list of matching files.
 * A pattern without metacharacters yields the file if it exists, else nothing.
 */
export function expandGlob(pattern: string, baseDir: string): string[] {
  const norm = pattern.replaceAll("\\", "/");
  const abs = isAbsolute(pattern);
  const root = abs ? (norm.startsWith("/") ? "/" : resolve(pattern.slice(0, 3))) : resolve(baseDir);
  const rest = abs ? (norm.startsWith("/") ? norm.slice(1) : norm.slice(3)) : norm;
  const segs = rest.split("/").filter((s) => s !== "" && s !== ".");
  const out = new Set<string>();
  const seen = new Set<string>();

  const walk = (dir: string, i: number): void => {
    if (i === segs.length) {
      if (isFile(dir)) out.add(dir);
      return;
    }
    const seg = segs[i]!;
    if (seg === "**") {
      // A symlinked directory that points back up the tree would make ** recurse forever:
      // descend into each real directory (device + inode) at most once per pattern position.
      const id = dirId(dir);
      const key = `${i}:${id}`;
      if (id !== null && seen.has(key)) return;
      if (id !== null) seen.add(key);
      walk(dir, i + 1); // zero directories
      for (const name of list(dir)) {
        if (name.startsWith(".") || name === "node_modules") continue;
        const child = join(dir, name);
        if (isDir(child)) walk(child, i); // one more directory, still inside **
      }
      return;
    }
    if (!hasGlob(seg)) {
      walk(join(dir, seg), i + 1);
      return;
    }
    const re = segmentRegex(seg);
    for (const name of list(dir)) {
      if (name.startsWith(".") && !seg.startsWith(".")) continue;
      if (re.test(name)) walk(join(dir, name), i + 1);
    }
  };
  walk(root, 0);
  const rel = (p: string) => (p.startsWith(root) ? p.slice(root.length) : p).split(sep).join("/");
  return [...out].sort((a, b) => {
    const ra = rel(a), rb = rel(b);
    return ra < rb ? -1 : ra > rb ? 1 : 0;
  });
}
