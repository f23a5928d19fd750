// The rollgate SRE console: the gateway's admin API (/admin), drawn in plain DOM and SVG.
//
// Everything shown comes from the API and is inserted as text (text nodes, setAttribute),
// never parsed as HTML: answers, prompts and reasons are untrusted.
"use strict";

const TOKEN_KEY = "rollgate.admin-token";
const REFRESH_MS = 2000;
const SERIES_QUERY = "seconds=600&points=60";
const HISTORY_LIMIT = 500;
const EVENTS_LISTED = 15;
const SVG_NS = "http://www.w3.org/2000/svg";

// --- DOM: text only --------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Attributes through setAttribute, listeners for on*, children as nodes or text.
function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "object" ? child : String(child));
  }
  return node;
}

function button(label, onclick, attrs) {
  return el("button", { type: "button", onclick, ...attrs }, label);
}

// --- The admin API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  // 401: no valid token (sign out); a 403 is a viewer asking for a change: it stays signed in.
  get auth() {
    return this.status === 401;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(method, path, body) {
  // The audit log names the token, so nothing else identifies the caller.
  const headers = { Authorization: `Bearer ${token()}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `the gateway did not answer (${error.message})`);
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const message = (data && data.error && data.error.message) || response.statusText;
  throw new ApiError(response.status, message);
}

function rolloutPath(route, tail = "") {
  return `/admin/rollouts/${encodeURIComponent(route)}${tail}`;
}

// --- Messages --------------------------------------------------------------------------------

function say(text, kind = "error") {
  const banner = document.getElementById("banner");
  banner.className = kind;
  banner.textContent = text;
  banner.hidden = !text;
}

// A refused token signs the console out, saying why; anything else is shown as it came.
function failed(error) {
  if (error instanceof ApiError && error.auth) {
    signOut();
    say(`Not signed in: the admin token is missing, not valid or revoked (401): ${error.message}`);
    return;
  }
  const status = error instanceof ApiError && error.status ? ` (${error.status})` : "";
  say(`Error${status}: ${error.message}`);
}

function report(node, text, ok) {
  node.className = ok ? "result ok" : "result error";
  node.textContent = text;
}

// --- Formatting ------------------------------------------------------------------------------

function known(x) {
  return x !== null && x !== undefined && Number.isFinite(x);
}

function percent(x) {
  return known(x) ? `${+x.toFixed(2)}%` : "–";
}

function clock(at) {
  return new Date(at * 1000).toLocaleTimeString();
}

function weightText(r) {
  const weight = percent(r.weight_percent);
  return r.shadow_sample > 0 ? `${weight} (shadow ${percent(r.shadow_sample * 100)})` : weight;
}

function holdText(r) {
  if (!r.hold) return r.reason;
  const automatic = r.hold.automatic ? " (automatic)" : "";
  return `held by ${r.hold.actor}${automatic}: ${r.hold.reason || "no reason given"}`;
}

function badge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

function checkList(checks) {
  if (!checks.length) return el("span", { class: "muted" }, "not evaluated yet");
  return el(
    "ul",
    { class: "checks" },
    checks.map((c) =>
      el("li", { "data-check": c.name }, badge(c.status), " ", el("strong", {}, c.name), ": ",
        el("span", { class: "reason" }, c.reason)),
    ),
  );
}

// --- Views: each is { node, refresh() }, refreshed every REFRESH_MS while shown ---------------

function rolloutsView() {
  const rows = el("tbody");
  const headings = ["Route", "Phase", "Step", "Weight", "Candidate / stable", "Hold / reason",
    "Checks"];
  const node = el("section", {},
    el("h2", {}, "Rollouts"),
    el("table", { id: "rollouts" },
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
      rows));

  async function refresh() {
    const { rollouts } = await api("GET", "/admin/rollouts");
    const empty = el("tr", {},
      el("td", { colspan: headings.length, class: "muted" }, "No rollouts."));
    rows.replaceChildren(...(rollouts.length ? rollouts.map(rolloutRow) : [empty]));
  }

  return { node, refresh };
}

function rolloutRow(r) {
  return el("tr", { "data-route": r.route },
    el("td", {}, el("a", { href: `#/rollout/${encodeURIComponent(r.route)}` }, r.route)),
    el("td", { class: "phase" }, badge(r.phase)),
    el("td", { class: "step" }, `${r.step_label} (${r.step + 1}/${r.steps.length})`),
    el("td", { class: "weight" }, weightText(r)),
    el("td", {}, `${r.candidate.name} / ${r.stable.name}`),
    el("td", { class: "hold" }, holdText(r)),
    el("td", {}, checkList(r.checks)));
}

function rolloutView(route) {
  const summary = el("dl", { class: "summary" });
  const checks = el("div");
  const result = el("p", { class: "result", role: "status" });
  const weight = el("input", { id: "weight", type: "number", min: 0, max: 100, step: "any",
    value: 5, "aria-label": "weight, percent" });
  const timeline = el("div", { class: "timeline" });
  const events = el("tbody");
  const charts = el("div", { class: "charts" });
  const actions = [
    { label: "Pause", path: "pause", ask: () => `Pause the rollout on ${route}?` },
    { label: "Resume", path: "resume", ask: () => `Resume the rollout on ${route}?` },
    { label: "Promote", path: "promote", body: () => ({ full: false }),
      ask: () => `Promote the rollout on ${route} to its next step?` },
    { label: "Abort", path: "abort", ask: () => `Abort the rollout on ${route}? ` +
      "Stable takes all traffic back." },
    { label: "Retry", path: "retry",
      ask: () => `Retry the rolled-back rollout on ${route}? The same users come back.` },
  ];
  const setWeight = { label: "Set weight", path: "weight",
    body: () => ({ percent: Number(weight.value) }),
    ask: (body) => `Set the candidate's weight on ${route} to ${body.percent}% ` +
      "(and pause there)?" };
  const node = el("section", {},
    el("p", {}, el("a", { href: "#/rollouts" }, "← All rollouts")),
    el("h2", {}, `Rollout on ${route}`),
    summary,
    el("div", { class: "actions" },
      actions.map((a) => button(a.label, () => act(route, a, result))),
      el("span", { class: "weight-input" }, weight, "%",
        button(setWeight.label, () => act(route, setWeight, result)))),
    result,
    el("h3", {}, "Checks"), checks,
    el("h3", {}, "Weight over time"), timeline,
    el("table", { class: "events" },
      el("thead", {}, el("tr", {},
        ["Time", "Decision", "Step", "Weight", "By", "Why"].map((h) => el("th", {}, h)))),
      events),
    el("h3", {}, "Last 10 minutes, per variant"), charts);

  async function refresh() {
    const [rollout, history] = await Promise.all([
      api("GET", rolloutPath(route)),
      api("GET", rolloutPath(route, `/history?limit=${HISTORY_LIMIT}`)),
    ]);
    summary.replaceChildren(...summaryItems(rollout));
    checks.replaceChildren(checkList(rollout.checks));
    timeline.replaceChildren(weightTimeline(history.events, Date.now() / 1000));
    const latest = history.events.slice(-EVENTS_LISTED).reverse();
    events.replaceChildren(...latest.map(eventRow));
    charts.replaceChildren(...(await seriesCharts(route)));
  }

  return { node, refresh };
}

function summaryItems(r) {
  const items = [
    ["Phase", badge(r.phase)],
    ["Step", `${r.step_label} (step ${r.step + 1} of ${r.steps.length}: ${r.steps.join(" → ")})`],
    ["Weight", weightText(r)],
    ["Candidate", r.candidate.name],
    ["Stable", r.stable.name],
    ["Hold / reason", holdText(r)],
    ["Verdict", r.verdict ? badge(r.verdict) : "not evaluated yet"],
  ];
  return items.flatMap(([term, value]) =>
    [el("dt", {}, term), el("dd", { "data-field": term.toLowerCase() }, value)]);
}

async function act(route, action, result) {
  const body = action.body ? action.body() : {};
  if (!window.confirm(action.ask(body))) {
    report(result, `${action.label}: cancelled.`, true);
    return;
  }
  try {
    const r = await api("POST", rolloutPath(route, `/${action.path}`), body);
    report(result, `${action.label}: done. Now ${r.phase} at ${r.step_label}, ` +
      `weight ${weightText(r)}.`, true);
  } catch (error) {
    if (error instanceof ApiError && error.auth) return failed(error);
    report(result, `${action.label} refused (${error.status}): ${error.message}`, false);
    return;
  }
  refreshView(app.view);
}

function eventRow(e) {
  const why = e.rule ? `${e.reason} [${e.rule}]` : e.reason;
  return el("tr", { class: `event ${e.kind}` },
    el("td", {}, clock(e.at)),
    el("td", {}, e.kind),
    el("td", {}, e.from_step === e.to_step ? e.to_step : `${e.from_step} → ${e.to_step}`),
    el("td", {}, e.from_weight === e.to_weight ? percent(e.to_weight) :
      `${percent(e.from_weight)} → ${percent(e.to_weight)}`),
    el("td", {}, e.actor),
    el("td", {}, why));
}

async function seriesCharts(route) {
  let series;
  try {
    series = await api("GET", rolloutPath(route, `/series?${SERIES_QUERY}`));
  } catch (error) {
    if (error instanceof ApiError && error.auth) throw error;
    return [el("p", { class: "error" }, `Charts unavailable (${error.status}): ${error.message}`)];
  }
  const scoreTitle = series.scores === "review" ? "Blind-review score (0–100)" :
    "Mean user score (0–100)";
  const panels = [
    ["Requests", "requests", (v) => v.toFixed(0), 1],
    ["Error rate", "error_rate", (v) => `${+(v * 100).toFixed(1)}%`, 0.01],
    ["p95 latency", "latency_p95_s", (v) => `${+v.toFixed(3)} s`, 0.001],
    [scoreTitle, "mean_score", (v) => v.toFixed(0), 100],
  ];
  const lines = (field) => [
    { name: `stable (${series.stable})`, cls: "stable", points: pointsOf(series, "stable", field) },
    { name: `${series.candidate_role} (${series.candidate})`, cls: "candidate",
      points: pointsOf(series, "candidate", field) },
  ];
  return panels.map(([title, field, format, floor]) =>
    lineChart(title, lines(field), format, floor));
}

function pointsOf(series, variant, field) {
  return series.points.map((p) => [p.end, p[variant][field]]);
}

function reviewView() {
  const status = el("p", { class: "result", role: "status" });
  const card = el("div");
  const state = { queue: [], shown: null };
  const node = el("section", {},
    el("h2", {}, "Blind review"),
    el("p", { class: "hint" }, "Two answers to the same prompt, one from stable and one from the " +
      "candidate, in random order. Which is better? Reviews score the candidate's shadow step."),
    status, card);

  async function load() {
    state.queue = (await api("GET", "/admin/shadow-pairs")).pairs;
    next();
  }

  function next() {
    state.shown = state.queue.shift() || null;
    card.replaceChildren(state.shown ? pairCard(state.shown, state.queue.length, decide, next) :
      el("p", { class: "muted" }, "No shadow pairs to review right now."));
  }

  async function decide(preferred, label) {
    const pair = state.shown;
    try {
      await api("POST", `/admin/shadow-pairs/${encodeURIComponent(pair.pair_id)}/review`,
        { preferred });
      report(status, `Review recorded: ${label}.`, true);
    } catch (error) {
      if (error instanceof ApiError && error.auth) return failed(error);
      const gone = error.status === 404 ? "the pair had rotated out or was already reviewed" :
        error.message;
      report(status, `Review not recorded (${error.status}): ${gone}.`, false);
    }
    if (state.queue.length) next();
    else await load().catch(failed);
  }

  // A pair being read stays put: the list is fetched again only when none is shown.
  async function refresh() {
    if (!state.shown) await load();
  }

  return { node, refresh };
}

function pairCard(pair, waiting, decide, skip) {
  const choices = [["A is better", "a"], ["B is better", "b"], ["Same", "same"]];
  const buttons = choices.map(([label, preferred]) => button(label, () => {
    buttons.forEach((b) => { b.disabled = true; });
    decide(preferred, label);
  }));
  return el("article", { class: "pair", "data-pair": pair.pair_id },
    el("p", { class: "muted" }, `Route ${pair.route} · ${waiting} more pair(s) waiting`),
    el("h3", {}, "Prompt"),
    promptList(pair.messages),
    el("div", { class: "answers" },
      answer("A", "answer-a", pair.a), answer("B", "answer-b", pair.b)),
    el("div", { class: "actions" }, buttons, button("Skip", skip)));
}

function answer(letter, id, text) {
  return el("div", { class: "answer" }, el("h3", {}, `Answer ${letter}`), el("pre", { id }, text));
}

// The client's messages as sent: usually {role, content}, content a string or a list of parts.
function promptList(messages) {
  const list = Array.isArray(messages) ? messages : [messages];
  return el("ol", { class: "prompt" }, list.map((m) =>
    el("li", {}, el("span", { class: "role" }, `${(m && m.role) || "?"}: `),
      contentText(m && m.content))));
}

function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part && part.text) || JSON.stringify(part)).join("\n");
  }
  return JSON.stringify(content);
}

// --- Charts: plain SVG -----------------------------------------------------------------------

const CHART = { width: 360, height: 170, left: 52, right: 10, top: 42, bottom: 22 };

// lines: [{ name, cls, points: [[time, value or null]] }]; `floor`: the least top of the y axis.
function lineChart(title, lines, format, floor) {
  const { width, height, left, right, top, bottom } = CHART;
  const times = lines.flatMap((l) => l.points.map(([t]) => t));
  const values = lines.flatMap((l) => l.points.map(([, v]) => v)).filter(known);
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const yMax = Math.max(floor, ...values);
  const x = (t) => left + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (width - left - right);
  const y = (v) => height - bottom - (v / yMax) * (height - top - bottom);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": title },
    svg("text", { x: 4, y: 14, class: "title" }, title),
    legend(lines, 4, 30),
    axes(x, y, t0, t1, yMax, format));
  if (!values.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, class: "empty" }, "no data"));
  }
  for (const line of lines) {
    for (const run of runs(line.points)) chart.append(drawRun(run, x, y, line.cls));
  }
  return chart;
}

function legend(lines, x, baseline) {
  return svg("text", { x, y: baseline, class: "legend" },
    lines.map((l, i) => svg("tspan", { class: l.cls, dx: i ? 12 : 0 }, `● ${l.name}`)));
}

function axes(x, y, t0, t1, yMax, format) {
  const { left, right, width } = CHART;
  return svg("g", { class: "axes" },
    svg("line", { x1: left, x2: width - right, y1: y(0), y2: y(0) }),
    svg("line", { x1: left, x2: left, y1: y(0), y2: y(yMax) }),
    svg("text", { x: left - 4, y: y(yMax) + 4, class: "y" }, format(yMax)),
    svg("text", { x: left - 4, y: y(0), class: "y" }, format(0)),
    svg("text", { x: x(t0), y: y(0) + 16, class: "x start" }, clock(t0)),
    svg("text", { x: x(t1), y: y(0) + 16, class: "x end" }, clock(t1)));
}

// Consecutive known values: a gap in the data is a gap in the line.
function runs(points) {
  const found = [[]];
  for (const [t, v] of points) {
    if (known(v)) found[found.length - 1].push([t, v]);
    else if (found[found.length - 1].length) found.push([]);
  }
  return found.filter((run) => run.length);
}

function drawRun(run, x, y, cls) {
  if (run.length === 1) {
    const [[t, v]] = run;
    return svg("circle", { cx: x(t), cy: y(v), r: 2.5, class: `dot ${cls}` });
  }
  const points = run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  return svg("polyline", { points, class: `line ${cls}` });
}

// The candidate's weight as a step line, each decision a marker (its details on hover).
function weightTimeline(events, now) {
  if (!events.length) return el("p", { class: "muted" }, "No decisions yet.");
  const { width, left, right, top, bottom } = CHART;
  const height = 150;
  const t0 = events[0].at;
  const t1 = Math.max(now, events[events.length - 1].at + 1);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width * 2 - left - right);
  const y = (w) => height - bottom - (w / 100) * (height - top - bottom);
  let path = `M${x(t0)},${y(events[0].from_weight)}`;
  for (const e of events) path += ` H${x(e.at)} V${y(e.to_weight)}`;
  path += ` H${x(t1)}`;
  return svg("svg", { class: "chart timeline", viewBox: `0 0 ${width * 2} ${height}`, role: "img",
    "aria-label": "candidate weight over time" },
    [0, 50, 100].map((w) => svg("g", { class: "axes" },
      svg("line", { x1: left, x2: width * 2 - right, y1: y(w), y2: y(w), class: "grid" }),
      svg("text", { x: left - 4, y: y(w) + 4, class: "y" }, `${w}%`))),
    svg("text", { x: x(t0), y: height - 4, class: "x start" }, clock(t0)),
    svg("text", { x: x(t1), y: height - 4, class: "x end" }, clock(t1)),
    svg("path", { d: path, class: "line weight" }),
    events.map((e) => svg("circle", { cx: x(e.at), cy: y(e.to_weight), r: 4,
      class: `marker ${e.kind}` },
      svg("title", {}, `${clock(e.at)} ${e.kind} by ${e.actor}: ${e.reason}`))));
}

// --- Navigation and sign-in ------------------------------------------------------------------

const app = { view: null, timer: null };

function viewFor(hash) {
  const match = /^#\/([a-z]+)(?:\/(.+))?$/.exec(hash) || [];
  if (match[1] === "rollout" && match[2]) return rolloutView(decodeURIComponent(match[2]));
  if (match[1] === "review") return reviewView();
  return rolloutsView();
}

async function refreshView(view) {
  if (view.busy) return; // a slow answer is not asked again on top of itself
  view.busy = true;
  try {
    await view.refresh();
    if (view === app.view) say(""); // a refresh that fails again says so again
  } catch (error) {
    if (view === app.view) failed(error);
  } finally {
    view.busy = false;
  }
}

function show() {
  clearInterval(app.timer);
  const signedIn = Boolean(token());
  document.getElementById("login").hidden = signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  app.view = signedIn ? viewFor(location.hash) : null;
  document.getElementById("view").replaceChildren(...(app.view ? [app.view.node] : []));
  if (!app.view) return;
  const view = app.view;
  refreshView(view);
  app.timer = setInterval(() => refreshView(view), REFRESH_MS);
}

function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  say("");
  show();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  show();
}

document.getElementById("login").addEventListener("submit", signIn);
document.getElementById("sign-out").addEventListener("click", () => {
  say("");
  signOut();
});
window.addEventListener("hashchange", () => {
  say("");
  show();
});
show();
