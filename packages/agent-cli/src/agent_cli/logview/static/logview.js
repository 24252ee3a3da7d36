// agent-rl logview: training curves, steps -> groups -> episodes, conversations and tokens of one run.
// Reads the JSON API of agent_cli/logview/server.py; plain DOM and SVG, no libraries.
"use strict";

const POLL_MS = 5000;
const COLORS = ["#2f6fde", "#e0793a", "#1f8a4c", "#9b51e0", "#c23b3b", "#127a8a"];
const DEFAULT_CHARTS = [
  {title: "Reward", keys: (all) => all.filter((k) => k === "reward/mean" || k === "reward/success_rate"),
   hint: "reward/mean (written by agent-rl train)"},
  {title: "Validation accuracy", keys: (all) => all.filter((k) => k === "val/accuracy" || k.startsWith("val/pass@")),
   hint: "val/accuracy (validation runs every ajet.trainer_common.test_freq steps)"},
  {title: "Lengths (tokens)", keys: (all) => all.filter((k) => /^tokens\/.*(_mean|length)/.test(k)),
   hint: "tokens/response_mean"},
];

const state = {run: null, metrics: [], runKey: "", metricsKey: "", step: null, stepData: null, episodeId: null, extraCharts: []};

// ------------------------------------------------------------------ small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.json();
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return value.toExponential(2);
  return value.toFixed(abs >= 100 ? 1 : digits);
}

function reasonClass(reason) {
  if (reason === "finished") return "badge finished";
  if (/error|failed/.test(reason)) return "badge error";
  return "badge truncated";
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return {step: params.get("step"), episode: params.get("episode")};
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.step) params.set("step", state.step);
  if (state.episodeId) params.set("episode", state.episodeId);
  history.replaceState(null, "", "#" + params.toString());
}

// ------------------------------------------------------------------ header

function renderHeader() {
  const run = state.run;
  document.title = `logview · ${run.name}`;
  document.getElementById("run-name").textContent = run.name;
  const meta = document.getElementById("run-meta");
  meta.replaceChildren(
    run.path, " · model ", run.model || "(not recorded)", " · ",
    `${run.steps.length} trajectory file${run.steps.length === 1 ? "" : "s"}`, " · ",
    `${run.metric_rows} metric row${run.metric_rows === 1 ? "" : "s"}`);
  document.getElementById("updated").textContent = "read " + new Date().toLocaleTimeString();
}

// ------------------------------------------------------------------ curves

function seriesOf(key) {
  const points = [];
  state.metrics.forEach((row, index) => {
    const value = row[key];
    if (typeof value === "number" && Number.isFinite(value)) {
      points.push([typeof row.step === "number" ? row.step : index, value]);
    }
  });
  return points;
}

// Round tick values covering [lo, hi] with about `count` intervals, never closer than `minStep`.
function niceTicks(lo, hi, count, minStep = 0) {
  if (lo === hi) { lo -= lo === 0 ? 1 : Math.abs(lo) * 0.1; hi += hi === 0 ? 1 : Math.abs(hi) * 0.1; }
  const raw = Math.max((hi - lo) / count, minStep);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw - 1e-12) || raw;
  const ticks = [];
  for (let i = Math.floor(lo / step + 1e-9); ; i++) {
    const t = Number((i * step).toPrecision(12));
    ticks.push(t);
    if (t >= hi - 1e-9 * Math.abs(step)) break;
  }
  return ticks;
}

function drawChart(title, keys, hint, removable) {
  const card = h("div", {class: "chart-card", "data-title": title});
  const head = h("div", {class: "chart-title"}, title);
  if (removable) head.append(h("button", {class: "remove", title: "remove this chart", onclick: () => {
    state.extraCharts = state.extraCharts.filter((k) => k !== title);
    renderCharts(true);
  }}, "×"));
  card.append(head);
  const series = keys.map((key) => ({key, points: seriesOf(key)})).filter((s) => s.points.length > 0);
  if (series.length === 0) {
    card.append(h("p", {class: "empty"}, `No data yet: ${hint}.`));
    return card;
  }
  const W = 460, H = 210, L = 46, R = 12, T = 10, B = 26;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xTicks = niceTicks(Math.min(...xs), Math.max(...xs), 6, 1);
  const yTicks = niceTicks(Math.min(...ys), Math.max(...ys), 4);
  const [x0, x1] = [Math.min(xTicks[0], ...xs), Math.max(xTicks[xTicks.length - 1], ...xs)];
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x) => L + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0))) * (H - T - B);
  const chart = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title});
  for (const t of yTicks) {
    chart.append(svg("line", {class: "grid", x1: L, x2: W - R, y1: sy(t), y2: sy(t)}));
    chart.append(svg("text", {x: L - 4, y: sy(t) + 3, "text-anchor": "end"}, fmt(t, 2)));
  }
  for (const t of xTicks.filter((t) => t >= x0 && t <= x1)) {
    chart.append(svg("text", {x: sx(t), y: H - B + 14, "text-anchor": "middle"}, fmt(t, 0)));
  }
  chart.append(svg("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
  chart.append(svg("line", {class: "axis", x1: L, x2: L, y1: T, y2: H - B}));
  chart.append(svg("text", {x: W - R, y: H - 2, "text-anchor": "end"}, "step"));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    chart.append(svg("path", {class: "series", d, stroke: color, "data-key": s.key, "data-points": s.points.length}));
    if (s.points.length <= 80) {
      for (const p of s.points) chart.append(svg("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color}));
    }
  });
  // hover: the values at the nearest step
  const cursor = svg("line", {class: "cursor", y1: T, y2: H - B, visibility: "hidden"});
  chart.append(cursor);
  chart.addEventListener("mousemove", (event) => {
    const box = chart.getBoundingClientRect();
    const x = x0 + ((event.clientX - box.left) * (W / box.width) - L) / (W - L - R) * (x1 - x0);
    let best = null;
    for (const s of series) for (const p of s.points) if (best === null || Math.abs(p[0] - x) < Math.abs(best - x)) best = p[0];
    cursor.setAttribute("x1", sx(best)); cursor.setAttribute("x2", sx(best)); cursor.setAttribute("visibility", "visible");
    const lines = [`step ${best}`];
    for (const s of series) {
      const p = s.points.find((q) => q[0] === best);
      if (p) lines.push(`${s.key} = ${fmt(p[1], 4)}`);
    }
    showTooltip(lines.join("\n"), event);
  });
  chart.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); hideTooltip(); });
  card.append(chart);
  card.append(h("div", {class: "legend"}, series.map((s, i) => h("span", {},
    h("span", {class: "swatch", style: `background:${COLORS[i % COLORS.length]}`}),
    `${s.key} (last ${fmt(s.points[s.points.length - 1][1])})`))));
  return card;
}

function renderCharts(force) {
  const key = JSON.stringify([state.metrics.length, state.metrics[state.metrics.length - 1], state.extraCharts]);
  if (!force && key === state.metricsKey) return;
  state.metricsKey = key;
  const keys = state.run ? state.run.metric_keys : [];
  const container = document.getElementById("curves");
  const cards = DEFAULT_CHARTS.map((c) => drawChart(c.title, c.keys(keys), c.hint, false));
  for (const extra of state.extraCharts) cards.push(drawChart(extra, [extra], extra, true));
  container.replaceChildren(...cards);
  const select = document.getElementById("add-chart");
  const shown = new Set(DEFAULT_CHARTS.flatMap((c) => c.keys(keys)).concat(state.extraCharts));
  select.replaceChildren(h("option", {value: ""}, keys.length ? "metric…" : "(no metrics.jsonl yet)"),
    ...keys.filter((k) => !shown.has(k)).map((k) => h("option", {value: k}, k)));
}

// ------------------------------------------------------------------ steps and groups

function renderSteps() {
  const nav = document.getElementById("steps");
  const steps = state.run.steps;
  if (steps.length === 0) {
    nav.replaceChildren(h("p", {class: "empty"}, "No trajectories/*.jsonl yet."));
    return;
  }
  nav.replaceChildren(...steps.map((s) => h("button", {
    class: "step-item" + (s.name === state.step ? " selected" : ""), type: "button", "data-step": s.name,
    onclick: () => selectStep(s.name, null),
  }, s.step === null ? s.name : `step ${s.step}`,
  h("span", {class: "sub"}, `${s.num_episodes} episodes · reward ${fmt(s.reward_mean, 2)} · solved ${Math.round(s.success_rate * 100)}%`))));
}

async function selectStep(name, episodeId) {
  state.step = name;
  state.episodeId = episodeId;
  writeHash();
  renderSteps();
  state.stepData = await getJSON(`/api/step?name=${encodeURIComponent(name)}`);
  renderGroups();
  if (episodeId) await selectEpisode(episodeId);
  else document.getElementById("episode").replaceChildren(h("p", {class: "empty"}, "Pick an episode."));
}

function componentChips(components) {
  const entries = Object.entries(components || {});
  if (entries.length === 0) return h("span", {class: "meta"}, "–");
  return h("span", {class: "chips"}, entries.map(([k, v]) => h("span", {class: "chip"}, `${k} ${fmt(v, 2)}`)));
}

function renderGroups() {
  const data = state.stepData;
  const container = document.getElementById("groups");
  const reasons = Object.entries(data.termination_reasons).map(([r, n]) => h("span", {class: reasonClass(r)}, `${r} ${n}`));
  const header = h("div", {class: "meta", style: "margin-bottom:6px"},
    `${data.name}: ${data.num_groups} groups, ${data.num_episodes} episodes, ${data.num_samples} samples · `, ...reasons);
  const cards = data.groups.length === 0 ? [h("p", {class: "empty"}, "This step has no samples.")] : [];
  for (const group of data.groups) {
    const rows = group.episodes.map((e) => h("tr", {
      class: "episode-row" + (e.episode_id === state.episodeId ? " selected" : ""), "data-episode": e.episode_id,
      onclick: () => selectEpisode(e.episode_id),
    },
    h("td", {}, e.episode_id.split("/").pop()),
    h("td", {}, fmt(e.reward, 2)),
    h("td", {class: e.is_success ? "ok" : "fail"}, e.is_success ? "✓" : "✗"),
    h("td", {}, h("span", {class: reasonClass(e.termination_reason)}, e.termination_reason)),
    h("td", {}, componentChips(e.reward_components)),
    h("td", {}, String(e.num_turns)),
    h("td", {title: "tool calls that ran (return code 0) / all tool calls"}, `${e.tools.ran}/${e.tools.calls}`),
    h("td", {title: "trained / all response tokens"}, `${e.trained_tokens}/${e.response_tokens}`)));
    cards.push(h("div", {class: "group", "data-group": group.group_id},
      h("div", {class: "group-head"},
        h("span", {}, h("span", {class: "task"}, group.task_id), " ", h("span", {class: "meta"}, group.group_id)),
        h("span", {}, `reward ${fmt(group.reward_mean, 2)} ± ${fmt(group.reward_std, 2)} · ${group.successes}/${group.episodes.length} solved`,
          group.zero_variance ? h("span", {class: "badge truncated", title: "every episode got the same reward: zero advantage, no learning signal"}, " zero variance") : null)),
      h("table", {class: "episodes"},
        h("thead", {}, h("tr", {}, ["#", "reward", "ok", "end", "components", "turns", "tools", "tokens"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows))));
  }
  container.replaceChildren(header, ...cards);
}

// ------------------------------------------------------------------ an episode

function contentText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => typeof part === "string" ? part : (part.text ?? part.content ?? JSON.stringify(part))).join("");
  }
  return JSON.stringify(content, null, 2);
}

function prettyArguments(args) {
  if (typeof args !== "string") return JSON.stringify(args, null, 2);
  try { return JSON.stringify(JSON.parse(args), null, 2); } catch { return args; }
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

// A message that is no assistant turn and no tool call's result: the system prompt, the task, a message the agent added.
function renderMessage(message) {
  const role = message.role || "?";
  const label = role === "tool" ? `tool result${message.name ? " · " + message.name : ""}${message.tool_call_id ? " · " + message.tool_call_id : ""}` : role;
  const box = h("div", {class: `message ${role}`}, h("div", {class: "role"}, label));
  const text = contentText(message.content);
  if (text) box.append(role === "tool" ? h("pre", {class: "content"}, text) : h("div", {class: "content"}, text));
  return box;
}

// The one-line summary of an episode: turns, tool calls and what came of them, reward, how it ended.
function episodeSummary(data) {
  const tools = data.tools;
  const parts = [plural(data.num_turns, "turn"), plural(tools.calls, "tool call"), `${tools.ran} ran (return code 0)`];
  if (tools.failed) parts.push(`${tools.failed} failed`);
  if (tools.parse_errors) parts.push(plural(tools.parse_errors, "parse error"));
  if (tools.unanswered) parts.push(`${tools.unanswered} without a result`);
  parts.push(`reward ${fmt(data.reward, 3)}`);
  return h("div", {class: "episode-summary"}, parts.join(" · "), " · ", h("span", {class: reasonClass(data.termination_reason)}, data.termination_reason));
}

function outputBlock(label, text, isError) {
  return h("div", {class: "output" + (isError ? " error" : "")}, h("span", {class: "label"}, label), h("pre", {class: label}, text));
}

// A tool's result under its call: return code, stdout and stderr apart for the python tool; the text otherwise.
function renderToolResult(result) {
  if (result === null) {
    return h("div", {class: "tool-result missing"}, h("div", {class: "label"}, "no result: the episode ended before the tool ran"));
  }
  const box = h("div", {class: `tool-result ${result.status}`});
  if (result.returncode === undefined) {
    box.append(h("div", {class: "label"}, result.status === "parse_error" ? "parse error: the call did not parse" : "result"),
      h("pre", {class: "text"}, result.text));
    return box;
  }
  box.append(h("div", {class: "label"}, "return code ", h("span", {class: "returncode"}, String(result.returncode))));
  if (result.stdout) box.append(outputBlock("stdout", result.stdout, false));
  if (result.stderr) box.append(outputBlock("stderr", result.stderr, true));
  if (!result.stdout && !result.stderr) box.append(h("div", {class: "meta"}, "(no output)"));
  return box;
}

// A tool call as the model wrote it (the python tool's code as code, other arguments as JSON), its result below.
function renderToolCall(call) {
  const box = h("div", {class: "tool-call", "data-tool": call.name},
    h("div", {class: "name"}, `→ ${call.name}`, call.id ? h("span", {class: "meta"}, `  ${call.id}`) : null));
  if (call.code !== null) box.append(h("pre", {class: "code"}, call.code));
  const hasArguments = typeof call.arguments === "string" || Object.keys(call.arguments || {}).length > 0;
  if (call.code === null || hasArguments) box.append(h("pre", {class: "arguments"}, prettyArguments(call.arguments)));
  box.append(renderToolResult(call.result));
  return box;
}

function turnTokenCounts(tokens) {
  if (tokens === null) return h("span", {class: "turn-tokens meta"}, "no tokens recorded for this turn");
  const counts = h("span", {class: "turn-tokens", title: "trained: sampled by the model (loss mask 1); inserted: template and tool output (loss mask 0)"},
    h("span", {class: "trained-count"}, `${tokens.trained_tokens} trained`), " · ",
    h("span", {class: "inserted-count"}, `${tokens.inserted_tokens} inserted`), " tokens");
  const sample = tokens.new_sample_prompt_tokens === null ? null
    : h("span", {class: "meta", title: "the agent's history no longer extended the previous sequence, so the collector started a new sample"},
      ` · sample ${tokens.sample_index} starts here (its prompt: ${tokens.new_sample_prompt_tokens} tokens, not trained)`);
  return h("span", {}, counts, sample);
}

function renderTurn(turn) {
  const block = h("div", {class: "turn", "data-turn": turn.turn},
    h("div", {class: "turn-head"}, h("span", {class: "turn-title"}, `Turn ${turn.turn}`), turnTokenCounts(turn.tokens)));
  if (turn.assistant === null) {
    block.append(h("p", {class: "empty"}, "This turn's message is not in the final conversation."));
    return block;
  }
  const message = h("div", {class: "message assistant"}, h("div", {class: "role"}, "assistant"));
  const text = contentText(turn.assistant.content);
  if (text) message.append(h("div", {class: "content"}, text));
  message.append(...turn.tool_calls.map(renderToolCall));
  block.append(message, ...turn.messages.map(renderMessage));
  return block;
}

function renderConversation(data) {
  const promptTokens = data.samples[0].prompt_tokens.length;
  const prompt = h("div", {class: "turn prompt-block"},
    h("div", {class: "turn-head"}, h("span", {class: "turn-title"}, "Prompt"), h("span", {class: "meta"}, `${promptTokens} tokens, not trained`)),
    data.prompt_messages.map(renderMessage));
  return h("div", {class: "conversation"}, prompt, data.turns.map(renderTurn));
}

// Lightness of a sampled token's background: 92% at logprob 0 (p = 1) down to 62% at -12 nats and below, on a
// square-root scale so that p = 0.9, 0.1 and 0.001 look clearly different.
function shadeLightness(logprob) {
  return 92 - 30 * Math.sqrt(Math.min(12, Math.max(0, -logprob)) / 12);
}

function tokenSpan(token, kind) {
  const attrs = {class: `tok ${kind}`, "data-id": token.id, "data-kind": kind, "data-turn": token.turn};
  if (kind === "trained" && token.logprob !== null && token.logprob !== undefined) {
    attrs["data-logprob"] = token.logprob;
    attrs.style = `background: hsl(214, 85%, ${shadeLightness(token.logprob).toFixed(1)}%)`;
  }
  const span = h("span", attrs);
  const text = token.text === null || token.text === undefined ? `[${token.id}]` : token.text;
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (i > 0) span.append(h("span", {class: "nl"}, "↵"), "\n");
    if (line) span.append(line);
  });
  if (!text) span.append(h("span", {class: "nl"}, "∅"));
  return span;
}

// The response tokens, with a mark where each turn starts.
function responseSpans(tokens) {
  const spans = [];
  tokens.forEach((token, i) => {
    if (i === 0 || token.turn !== tokens[i - 1].turn) spans.push(h("span", {class: "turn-mark"}, `turn ${token.turn}`));
    spans.push(tokenSpan(token, token.mask === 1 ? "trained" : "inserted"));
  });
  return spans;
}

function renderTokens(sample) {
  const trained = sample.response_tokens.filter((t) => t.mask === 1).length;
  const prompt = h("details", {}, h("summary", {}, `prompt: ${sample.prompt_tokens.length} tokens (not trained)`),
    h("div", {class: "tokens prompt-tokens"}, sample.prompt_tokens.map((t) => tokenSpan(t, "prompt"))));
  const response = h("div", {class: "tokens response-tokens", "data-sample": sample.sample_index}, responseSpans(sample.response_tokens));
  return [
    h("h3", {}, `Tokens of sample ${sample.sample_index}: ${sample.response_tokens.length} after the prompt, ${trained} trained`,
      sample.response_truncated ? h("span", {class: "badge truncated"}, " truncated") : null),
    h("div", {class: "token-legend"},
      h("span", {}, h("span", {class: "box", style: "background: hsl(214, 85%, 92%)"}), "sampled by the model (loss mask 1): darker = lower logprob"),
      h("span", {}, "p = 1", h("span", {class: "ramp"}), "p ≤ e⁻¹²"),
      h("span", {}, h("span", {class: "box", style: "background: var(--inserted)"}), "inserted by the template or env (mask 0)")),
    prompt, response,
  ];
}

async function selectEpisode(episodeId) {
  state.episodeId = episodeId;
  writeHash();
  for (const row of document.querySelectorAll("tr.episode-row")) row.classList.toggle("selected", row.dataset.episode === episodeId);
  const panel = document.getElementById("episode");
  let data;
  try {
    data = await getJSON(`/api/episode?step=${encodeURIComponent(state.step)}&episode_id=${encodeURIComponent(episodeId)}`);
  } catch (error) {
    panel.replaceChildren(h("p", {class: "notice"}, String(error)));
    return;
  }
  const head = h("div", {class: "episode-head"},
    h("span", {class: "id"}, data.episode_id),
    h("span", {class: data.is_success ? "ok" : "fail"}, data.is_success ? "solved" : "not solved"),
    h("span", {class: "meta"}, plural(data.num_samples, "sample")),
    data.madness.length ? h("span", {class: "badge error"}, "madness: " + data.madness.join(", ")) : null);
  const parts = [head, episodeSummary(data), h("div", {}, h("span", {class: "meta"}, "reward components: "), componentChips(data.reward_components))];
  if (data.tokenizer_note) parts.push(h("p", {class: "notice"}, data.tokenizer_note));
  parts.push(h("h3", {}, "Turns"));
  if (data.turns_note) parts.push(h("p", {class: "notice"}, data.turns_note));
  parts.push(renderConversation(data));
  for (const sample of data.samples) parts.push(...renderTokens(sample));
  panel.replaceChildren(...parts);
}

// ------------------------------------------------------------------ tooltip

const tooltip = document.getElementById("tooltip");

function showTooltip(text, event) {
  tooltip.textContent = text;
  tooltip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
  const y = event.clientY + 16 + tooltip.offsetHeight > window.innerHeight ? event.clientY - tooltip.offsetHeight - 10 : event.clientY + 16;
  tooltip.style.left = `${x}px`;
  tooltip.style.top = `${y}px`;
}

function hideTooltip() { tooltip.hidden = true; }

document.addEventListener("mouseover", (event) => {
  const tok = event.target.closest && event.target.closest(".tok");
  if (!tok) return;
  const text = tok.textContent.replace(/↵\n/g, "\\n").replace(/∅/, "");
  const lines = [`id ${tok.dataset.id} · ${JSON.stringify(text)}`];
  if (tok.dataset.kind === "trained") {
    const lp = Number(tok.dataset.logprob);
    lines.push(tok.dataset.logprob === undefined ? "logprob –" : `logprob ${lp.toFixed(4)} · p ${Math.exp(lp).toFixed(4)}`);
    lines.push(`sampled by the model in turn ${tok.dataset.turn} (loss mask 1)`);
  } else if (tok.dataset.kind === "inserted") {
    lines.push(`inserted by the template or env after turn ${tok.dataset.turn} (loss mask 0)`);
  } else {
    lines.push("prompt (not trained)");
  }
  showTooltip(lines.join("\n"), event);
});
document.addEventListener("mouseout", (event) => {
  if (event.target.closest && event.target.closest(".tok")) hideTooltip();
});

// ------------------------------------------------------------------ refresh

async function refresh() {
  const [run, metrics] = await Promise.all([getJSON("/api/run"), getJSON("/api/metrics")]);
  const oldStep = state.run && state.step ? state.run.steps.find((s) => s.name === state.step) : null;
  state.run = run;
  state.metrics = metrics;
  renderHeader();
  renderCharts(false);
  const runKey = JSON.stringify(run.steps);
  if (runKey !== state.runKey) {
    state.runKey = runKey;
    renderSteps();
    const newStep = state.step ? run.steps.find((s) => s.name === state.step) : null;
    if (newStep && oldStep && newStep.num_samples !== oldStep.num_samples) {
      state.stepData = await getJSON(`/api/step?name=${encodeURIComponent(state.step)}`);
      renderGroups();
    }
  }
}

async function start() {
  document.getElementById("refresh").addEventListener("click", () => refresh().catch(reportError));
  document.getElementById("add-chart").addEventListener("change", (event) => {
    if (event.target.value) state.extraCharts.push(event.target.value);
    renderCharts(true);
  });
  await refresh();
  const wanted = readHash();
  const names = state.run.steps.map((s) => s.name);
  if (wanted.step && names.includes(wanted.step)) await selectStep(wanted.step, wanted.episode);
  else if (names.length) await selectStep(names[names.length - 1], null);
  setInterval(() => {
    if (document.getElementById("auto-refresh").checked) refresh().catch(reportError);
  }, POLL_MS);
}

function reportError(error) {
  document.getElementById("updated").textContent = `could not read the run: ${error.message}`;
}

start().catch(reportError);
