/**
 * Chat prompts: the model's own chat template when its `tokenizer_config.json` has one (a Jinja
 * template, rendered with `@huggingface/jinja` as HF `apply_chat_template` does), else a plain
 * documented template:
 *
 * ```
 * System: <system text>
 * User: <text>
 * Assistant: <text>
 * Assistant:
 * ```
 *
 * one `Role: content` line per message (a message's own newlines kept), then `Assistant:` to
 * prompt the reply. With the plain template the server also stops generation at `\nUser:`, so the
 * model does not write the next user turn.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { type ChatMessage, contentText } from "./schemas.ts";

/** A chat template ready to render messages into a prompt. */
export interface ChatTemplate {
  /** "model" (from tokenizer_config.json) or "plain". */
  readonly kind: "model" | "plain";
  /** The prompt text for `messages`, ending where the assistant's reply starts. */
  render(messages: ChatMessage[]): string;
  /** Whether the rendered text contains special tokens to recognise when encoding (the model template does). */
  readonly specialTokens: boolean;
  /** Extra stop strings this template needs (the plain template: "\nUser:"). */
  readonly stop: string[];
}

/** Error in a model folder's tokenizer_config.json. */
export class ChatTemplateError extends Error {
  override name = "ChatTemplateError";
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

/** The plain template described in the module doc. */
export function plainTemplate(): ChatTemplate {
  const names: Record<string, string> = { system: "System", developer: "System", user: "User", assistant: "Assistant" };
  return {
    kind: "plain",
    specialTokens: false,
    stop: ["\nUser:"],
    render(messages) {
      return messages.map((m) => `${names[m.role]}: ${contentText(m.content)}\n`).join("") + "Assistant:";
    },
  };
}

/**
 * The chat template of a model folder: `tokenizer_config.json`'s `chat_template` (a string, or HF's
 * list of `{name, template}` of which "default" is used), else {@linkcode plainTemplate}.
 *
 * @throws {ChatTemplateError} If the file is not valid JSON or the template does not parse.
 */
export function loadChatTemplate(modelDir: string): ChatTemplate {
  const file = join(modelDir, "tokenizer_config.json");
  if (!existsSync(file)) return plainTemplate();
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new ChatTemplateError(`${file}: invalid JSON: ${(e as Error).message}`);
  }
  let src = cfg.chat_template;
  if (Array.isArray(src)) {
    const named = src.find((t) => t && typeof t === "object" && t.name === "default") ?? src[0];
    src = named?.template;
  }
  if (src === undefined || src === null) return plainTemplate();
  if (typeof src !== "string") throw new ChatTemplateError(`${file}: chat_template: expected a string`);
  let template: Template;
  try {
    template = new Template(src);
  } catch (e) {
    throw new ChatTemplateError(`${file}: chat_template does not parse: ${(e as Error).message}`);
  }
  const bos = tokenText(cfg.bos_token) ?? "", eos = tokenText(cfg.eos_token) ?? "";
  return {
    kind: "model",
    specialTokens: true,
    stop: [],
    render(messages) {
      return template.render({
        messages: messages.map((m) => ({
          role: m.role === "developer" ? "system" : m.role,
          content: contentText(m.content),
        })),
        bos_token: bos,
        eos_token: eos,
        add_generation_prompt: true,
      });
    },
  };
}
