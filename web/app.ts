/// <reference lib="dom" />
/**
 * The chat page script (bundled by web/bundle.ts). It streams a chat completion from the same
 * server and, for every generated token, draws one column of a heat strip: one cell per layer,
 * darker when the layer used more of its FFN experts (the `lte.active_experts` field of each SSE
 * chunk). The header shows tokens/s, time to first token and the response's FFN sparsity.
 *
 * @module
 */

interface Props {
  model: string;
  n_layer: number;
  experts_per_layer: number | null;
  context_size: number;
}
interface Message {
  role: "user" | "assistant";
  content: string;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const history: Message[] = [];
let props: Props | null = null;
let busy = false;

function cellColor(frac: number): string {
  // 0 experts active: pale; all active: dark red.
  const light = 95 - Math.round(frac * 65);
  return `hsl(8, 80%, ${light}%)`;
}

function addColumn(strip: HTMLElement, experts: number[], index: number): void {
  const col = document.createElement("div");
  col.className = "col";
  const E = props?.experts_per_layer ?? 0;
  experts.forEach((a, layer) => {
    const cell = document.createElement("div");
    cell.className = "cell";
    cell.style.background = cellColor(E ? a / E : 1);
    cell.title = `token ${index + 1}, layer ${layer}: ${a}/${E} experts`;
    col.appendChild(cell);
  });
  strip.appendChild(col);
}

function addMessage(role: string, text = ""): HTMLElement {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function send(text: string): Promise<void> {
  busy = true;
  ($("send") as HTMLButtonElement).disabled = true;
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const box = addMessage("assistant");
  const body = document.createElement("div");
  body.className = "text";
  box.appendChild(body);
  const strip = document.createElement("div");
  strip.className = "strip";
  box.appendChild(strip);
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.textContent = props?.experts_per_layer
    ? `experts used per layer (rows: ${props.n_layer} layers, columns: tokens; darker = more of ${props.experts_per_layer})`
    : "dense model: every layer uses all of its FFN";
  box.appendChild(legend);
  const t0 = performance.now();
  let first = 0, tokens = 0, reply = "";
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 128,
      }),
    });
    if (!res.ok || !res.body) {
      const err = await res.json().catch(() => null);
      throw new Error(err?.error?.message ?? `HTTP ${res.status}`);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const piece: string | undefined = chunk.choices?.[0]?.delta?.content;
        for (const experts of (chunk.lte?.active_experts ?? []) as number[][]) {
          if (!first) {
            first = performance.now();
            $("ttft").textContent = `TTFT: ${Math.round(first - t0)} ms`;
          }
          addColumn(strip, experts, tokens++);
          const secs = (performance.now() - first) / 1000;
          if (tokens > 1 && secs > 0) $("tps").textContent = `tokens/s: ${((tokens - 1) / secs).toFixed(1)}`;
        }
        if (piece) {
          const span = document.createElement("span");
          span.className = "tok";
          span.textContent = piece;
          body.appendChild(span);
          reply += piece;
        }
        if (chunk.usage) {
          const s = chunk.usage.ffn_sparsity;
          $("sparsity").textContent = `FFN sparsity: ${s === null ? "dense" : (100 * s).toFixed(1) + "%"}`;
        }
        if (chunk.timings) $("tps").textContent = `tokens/s: ${chunk.timings.tokens_per_second}`;
      }
    }
    history.push({ role: "assistant", content: reply });
    box.dataset.done = "1";
  } catch (e) {
    box.classList.add("error");
    body.textContent += `\n[error: ${(e as Error).message}]`;
    history.pop();
  } finally {
    busy = false;
    ($("send") as HTMLButtonElement).disabled = false;
  }
}

async function init(): Promise<void> {
  try {
    const res = await fetch("/props");
    if (res.ok) {
      props = await res.json();
      $("model").textContent = `${props!.model} (${props!.experts_per_layer ? "LTE sparse" : "dense"})`;
    }
  } catch { /* the page still works without /props */ }
  const input = $("input") as HTMLTextAreaElement;
  $("form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || busy) return;
    input.value = "";
    void send(text);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      ($("form") as HTMLFormElement).requestSubmit();
    }
  });
  document.body.dataset.ready = "1";
}

void init();
