// spotrun dashboard: plain ES modules, no build step and nothing fetched from the network.
// Charts are inline SVG drawn here: a timeline of attempts is a few rectangles and markers, which
// a charting library would not make simpler, and SVG stays crisp, selectable and testable.
"use strict";

const POLL_MS = 2000;
const LOG_POLL_MS = 1000;
const PAGE = 50;
const STATES = ["PENDING", "PROVISIONING", "RUNNING", "RECOVERING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED"];
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const SVGNS = "http://www.w3.org/2000/svg";

// --- small helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false) el.append(kid);
  return el;
}

function s(tag, attrs = {}, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false) el.append(kid);
  return el;
}

const title = (text) => s("title", {}, text);
const money = (x) => (x == null ? "–" : x < 1 ? `$${x.toFixed(4)}` : `$${x.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`);
const num = (x) => (x == null ? "–" : Number(x).toLocaleString());
const pad = (n) => String(n).padStart(2, "0");

function clock(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return d.toDateString() === new Date().toDateString() ? hms : `${d.toISOString().slice(0, 10)} ${hms}`;
}

function dur(sec) {
  if (sec == null) return "–";
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${sec < 10 ? sec.toFixed(1) : Math.round(sec)}s`;
  const m = Math.floor(sec / 60), hr = Math.floor(m / 60);
  if (hr < 1) return `${m}m ${pad(Math.round(sec % 60))}s`;
  if (hr < 48) return `${hr}h ${pad(m % 60)}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

function ago(ts) {
  return ts ? `${dur(Math.max(0, Date.now() / 1000 - ts))} ago` : "–";
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

const badge = (state) => h("span", { class: `badge ${state}`, "data-state": state }, state);
const cause = (c) => h("span", { class: `cause ${c || "live"}` }, c || "running");

function toast(message, kind = "") {
  const el = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

async function api(path, options = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...options });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw Object.assign(new Error(body?.error || `${res.status} ${res.statusText}`), { status: res.status });
  return { body, headers: res.headers };
}

function card(k, v, sub = "", cls = "") {
  return h("div", { class: `card ${cls}` }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), sub ? h("div", { class: "s" }, sub) : null);
}

function panel(name, hint, ...kids) {
  return h("section", { class: "panel" }, h("header", {}, h("h2", {}, name), hint ? h("span", { class: "hint" }, hint) : null), ...kids);
}

function table(cols, rows, empty = "nothing yet") {
  const head = h("tr", {}, cols.map(([label, right]) => h("th", { class: right ? "r" : "" }, label)));
  const body = rows.length ? rows : [h("tr", {}, h("td", { class: "empty", colspan: cols.length }, empty))];
  return h("div", { class: "tablewrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

function ticksFor(t0, t1, n = 6) {
  const span = Math.max(1, t1 - t0);
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const step = steps.find((x) => span / x <= n) || 86400 * Math.ceil(span / 86400 / n);
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
  return out;
}

// --- polling: one page's timers at a time; paused while the tab is hidden ---------------

let timers = [];
let lastUpdate = 0;

function every(ms, fn) {
  let busy = false, again = false;
  const tick = async () => {
    if (document.hidden) return;
    if (busy) {  // a click or filter while a refresh is in flight: refresh again right after it
      again = true;
      return;
    }
    busy = true;
    try {
      await fn();
      lastUpdate = Date.now();
      markLive();
    } catch (err) {
      markLive(err);
    } finally {
      busy = false;
      if (again) {
        again = false;
        tick();
      }
    }
  };
  tick();
  timers.push(setInterval(tick, ms));
  return tick;
}

function markLive(err) {
  const el = document.getElementById("live");
  el.classList.toggle("paused", Boolean(err));
  el.textContent = err ? `update failed: ${err.message}` : `● live · ${clock(lastUpdate / 1000)}`;
}

async function refreshController() {
  const { body } = await api("/api/summary");
  const el = document.getElementById("controller");
  const c = body.controller;
  el.className = `pill ${c.running ? "up" : "down"}`;
  el.textContent = c.running ? `controller running · ${c.active_jobs} active` : `controller stopped · ${c.active_jobs} waiting`;
  el.title = c.running ? `pid ${c.pid} on ${c.db}` : "requests are recorded and acted on when `spotrun controller start` runs";
  return body;
}

// --- router -------------------------------------------------------------------------------

function navigate(url) {
  history.pushState({}, "", url);
  route();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-link]");
  if (!a || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", () => route());
document.addEventListener("visibilitychange", () => { if (!document.hidden) timers.length && markLive(); });

function route() {
  timers.forEach(clearInterval);
  timers = [];
  const main = document.getElementById("main");
  main.replaceChildren();
  const path = location.pathname;
  const job = path.match(/^\/jobs\/([^/]+)$/);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("on", a.dataset.nav === (path.startsWith("/fleet") ? "fleet" : "jobs")));
  if (job) jobPage(main, decodeURIComponent(job[1]));
  else if (path === "/fleet") fleetPage(main);
  else jobsPage(main);
}

// --- actions with confirmation ------------------------------------------------------------

const ACTIONS = {
  cancel: { label: "Cancel job", text: "Its instance is terminated and the job ends CANCELLED. Checkpoints are kept, so Resume can continue it later." },
  resume: { label: "Resume job", text: "The job runs again under the same id, restoring its newest checkpoint, with fresh retry budgets." },
  interrupt: { label: "Send reclaim notice", text: "The local market reclaims the instance with a notice, as a cloud would: the job should save, and the controller relaunches it." },
};

function confirmAction(action, job) {
  const dlg = document.getElementById("confirm");
  const spec = ACTIONS[action];
  document.getElementById("confirm-title").textContent = `${spec.label.split(" ")[0]} ${job.name} (${job.id})?`;
  document.getElementById("confirm-text").textContent = spec.text;
  document.getElementById("confirm-ok").textContent = spec.label;
  const lead = document.getElementById("confirm-lead");
  lead.hidden = action !== "interrupt";
  lead.querySelector("input").value = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "yes" ? { lead_time: lead.querySelector("input").value.trim() } : null), { once: true });
    dlg.showModal();
  });
}

async function act(action, job, after) {
  const body = await confirmAction(action, job);
  if (!body) return;
  try {
    const { body: res } = await api(`/api/jobs/${encodeURIComponent(job.id)}/${action}`, {
      method: "POST", headers: { "content-type": "application/json", "x-spotrun-action": "1" }, body: JSON.stringify(body),
    });
    toast(action === "interrupt" ? `reclaim notice sent to ${res.instance_id} (attempt ${res.attempt})` : `${action} requested: job ${res.id} is ${res.status}`);
    after && after();
  } catch (err) {
    toast(err.message, "error");
  }
}

// --- jobs ---------------------------------------------------------------------------------

function jobsPage(main) {
  const params = new URLSearchParams(location.search);
  const state = { states: new Set((params.get("state") || "").split(",").filter(Boolean)), q: params.get("q") || "", offset: Number(params.get("offset") || 0) };
  const cards = h("div", { class: "cards" });
  const chips = h("span", { class: "filters" });
  // The search box stays put while the chips around it refresh, so typing keeps its focus.
  const search = h("input", { class: "search", type: "search", placeholder: "Filter by name or id…", value: state.q, "aria-label": "filter jobs" });
  const holder = h("div");
  const pager = h("div", { class: "pager" });
  main.append(h("h1", {}, "Jobs"), cards, h("div", { class: "filters" }, chips, h("span", { class: "spacer" }), search), holder, pager);

  const syncUrl = () => {
    const p = new URLSearchParams();
    if (state.states.size) p.set("state", [...state.states].join(","));
    if (state.q) p.set("q", state.q);
    if (state.offset) p.set("offset", state.offset);
    history.replaceState({}, "", `/${p.toString() ? "?" + p : ""}`);
  };
  let debounce;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.q = search.value.trim(); state.offset = 0; syncUrl(); refresh(); }, 250);
  });

  const refresh = every(POLL_MS, async () => {
    const query = new URLSearchParams({ limit: PAGE, offset: state.offset });
    if (state.states.size) query.set("state", [...state.states].join(","));
    if (state.q) query.set("q", state.q);
    const [summary, page] = await Promise.all([refreshController(), api(`/api/jobs?${query}`)]);
    const counts = summary.states;
    const active = STATES.filter((x) => !TERMINAL.has(x)).reduce((n, x) => n + counts[x], 0);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const rows = page.body;
    cards.replaceChildren(
      card("Jobs", num(total), `${num(active)} active`),
      card("Running", num(counts.RUNNING), `${num(counts.PROVISIONING + counts.PENDING)} starting`),
      card("Recovering", num(counts.RECOVERING), "relaunching after a reclaim", counts.RECOVERING ? "bad" : ""),
      card("Succeeded", num(counts.SUCCEEDED), `${num(counts.FAILED)} failed · ${num(counts.CANCELLED)} cancelled`),
    );
    chips.replaceChildren(
      h("button", { class: `chip ${state.states.size ? "" : "on"}`, onclick: () => { state.states.clear(); state.offset = 0; syncUrl(); refresh(); } }, "All", h("span", { class: "n" }, num(total))),
      ...STATES.map((st) => h("button", {
        class: `chip ${state.states.has(st) ? "on" : ""}`, "data-filter": st,
        onclick: () => { state.states.has(st) ? state.states.delete(st) : state.states.add(st); state.offset = 0; syncUrl(); refresh(); },
      }, st.toLowerCase(), h("span", { class: "n" }, num(counts[st])))),
    );
    const matched = Number(page.headers.get("x-total-count") || rows.length);
    holder.replaceChildren(table(
      [["Job"], ["State"], ["Attempts", 1], ["Reclaims", 1], ["Errors", 1], ["Cost", 1], ["Saved vs on-demand", 1], ["Submitted"], ["Wall time", 1]],
      rows.map((j) => h("tr", { "data-job": j.id },
        h("td", {}, h("a", { href: `/jobs/${j.id}`, "data-link": true }, j.name), h("span", { class: "sub" }, j.id)),
        h("td", {}, badge(j.status)),
        h("td", { class: "r" }, num(j.attempts)),
        h("td", { class: "r" }, j.reclaims ? h("span", { class: "cause reclaim" }, num(j.reclaims)) : "0"),
        h("td", { class: "r" }, num(j.errors)),
        h("td", { class: "r" }, money(j.cost)),
        h("td", { class: "r" }, h("span", { class: "saving" }, money(j.saving)), h("span", { class: "sub" }, `${j.saving_pct.toFixed(0)}%`)),
        h("td", {}, clock(j.created_at), h("span", { class: "sub" }, ago(j.created_at))),
        h("td", { class: "r" }, dur(j.wall_s)),
      )),
      state.q || state.states.size ? "no job matches these filters" : "no jobs yet: `spotrun launch job.yaml` submits one, `spotrun demo` shows one",
    ));
    const last = Math.min(state.offset + PAGE, matched);
    pager.replaceChildren(
      h("span", {}, matched ? `${num(state.offset + 1)}–${num(last)} of ${num(matched)}` : ""),
      h("button", { class: "btn", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - PAGE); syncUrl(); refresh(); } }, "← Newer"),
      h("button", { class: "btn", disabled: last >= matched, onclick: () => { state.offset += PAGE; syncUrl(); refresh(); } }, "Older →"),
    );
  });
}

// --- one job ------------------------------------------------------------------------------

function jobPage(main, ref) {
  const head = h("h1", {}, h("a", { href: "/", "data-link": true }, "Jobs"), " / ", h("span", { id: "jobname" }, ref));
  const cards = h("div", { class: "cards" });
  const reason = h("div");
  const timeline = h("div", { id: "timeline" });
  const progress = h("div", { id: "progress" });
  const lost = h("div");
  const attempts = h("div");
  const snaps = h("div");
  const events = h("div", { class: "events" });
  const logs = logPanel(ref);
  main.append(
    head, cards, reason,
    panel("Attempt timeline", "each bar is one instance; a reclaim ends a bar and the controller relaunches", timeline, legend([
      ["spot", "spot"], ["od", "on-demand"], ["notice", "reclaim notice"], ["reclaim", "reclaimed"], ["success", "succeeded"], ["relaunch", "relaunch"]])),
    h("div", { class: "grid2" },
      panel("Progress across attempts", "steps each attempt ran; red is work done again after a reclaim", progress, legend([["done", "steps run"], ["lost", "redone after a reclaim"], ["reclaim", "reclaim"]])),
      panel("Work lost per reclaim", "", lost)),
    panel("Attempts", "", attempts),
    panel("Snapshots in the store", "", snaps),
    panel("Events", "", events),
    logs.el,
  );
  const tick = every(POLL_MS, async () => {
    let v, p, summary;
    try {
      [{ body: v }, { body: p }, summary] = await Promise.all([
        api(`/api/jobs/${encodeURIComponent(ref)}`), api(`/api/jobs/${encodeURIComponent(ref)}/progress`), refreshController()]);
    } catch (err) {
      if (err.status === 404) {  // a mistyped or ambiguous id: say so instead of a blank page
        timers.forEach(clearInterval);
        main.replaceChildren(head, h("p", { class: "reason", id: "notfound" }, err.message));
      }
      throw err;
    }
    document.title = `${v.name} · spotrun`;
    head.replaceChildren(
      h("a", { href: "/", "data-link": true }, "Jobs"), h("span", { class: "muted" }, " / "), v.name, h("span", { class: "id" }, v.id), badge(v.status),
      h("span", { class: "actions" }, actionButtons(v, summary.interruptible, () => setTimeout(tick, 300))),
    );
    cards.replaceChildren(
      card("Attempts", num(v.attempts), `${v.provider} provider`),
      card("Reclaims", num(v.reclaims), "the cloud took the machine", v.reclaims ? "bad" : ""),
      card("Errors", num(v.errors), "the command failed"),
      card("Cost", money(v.cost), `on-demand: ${money(v.on_demand_cost)}`),
      card("Saved", money(v.saving), `${v.saving_pct.toFixed(0)}% vs on-demand`, "good"),
      card("Wall time", dur(v.wall_s), `since ${clock(v.created_at)}`),
    );
    reason.replaceChildren(...(v.reason ? [h("div", { class: "reason" }, v.reason)] : []));
    timeline.replaceChildren(timelineChart(v, timeline.clientWidth || 1100));
    progress.replaceChildren(progressChart(p, progress.clientWidth || 520));
    lost.replaceChildren(lostTable(p));
    attempts.replaceChildren(attemptTable(v));
    const evs = v.events.slice().reverse();
    events.replaceChildren(table([["Time"], ["Attempt", 1], ["Event"], ["Detail"]], evs.map((e) => h("tr", {},
      h("td", { class: "mono" }, clock(e.at)), h("td", { class: "r" }, e.attempt ?? ""), h("td", { class: `kind ${e.kind}` }, e.kind), h("td", {}, e.message.split("\n")[0])))));
    logs.update(v);
  });
  every(POLL_MS * 2.5, async () => {
    const { body } = await api(`/api/jobs/${encodeURIComponent(ref)}/snapshots`);
    snaps.replaceChildren(
      body.store ? h("p", { class: "muted" }, "store ", h("span", { class: "mono" }, body.store), body.note ? ` · ${body.note}` : "") : h("p", { class: "muted" }, body.note),
      ...(body.store ? [table([["Snapshot"], ["Attempt", 1], ["Created"], ["Files", 1], ["Size", 1], ["Uploaded", 1], ["Took", 1], ["Pinned"]],
        body.snapshots.slice().reverse().map((r) => r.invalid ? h("tr", {}, h("td", { class: "mono" }, r.id), h("td", { class: "r" }, r.attempt),
          h("td", { colspan: 5, class: "bad" }, `invalid: ${r.invalid}`), h("td", {}, r.pinned ? "yes" : "")) : h("tr", {}, h("td", { class: "mono" }, r.id), h("td", { class: "r" }, r.attempt),
          h("td", {}, clock(Date.parse(r.created_at) / 1000)), h("td", { class: "r" }, num(r.files)), h("td", { class: "r" }, bytes(r.size)),
          h("td", { class: "r" }, bytes(r.uploaded_bytes)), h("td", { class: "r" }, r.duration_s == null ? "–" : dur(r.duration_s)),
          h("td", {}, r.pinned ? "yes" : ""))), "no snapshot yet")] : []),
    );
  });
}

function actionButtons(v, interruptible, after) {
  const live = v.attempt_list.find((a) => a.ended_at == null && a.instance_id);
  const btns = [];
  if (!TERMINAL.has(v.status) && live && live.spot && interruptible.includes(v.provider))
    btns.push(h("button", { class: "btn warn", "data-action": "interrupt", onclick: () => act("interrupt", v, after) }, "Interrupt"));
  if (!TERMINAL.has(v.status) && v.status !== "CANCELLING")
    btns.push(h("button", { class: "btn danger", "data-action": "cancel", onclick: () => act("cancel", v, after) }, "Cancel"));
  if (TERMINAL.has(v.status))
    btns.push(h("button", { class: "btn", "data-action": "resume", onclick: () => act("resume", v, after) }, "Resume"));
  return btns;
}

function legend(items) {
  return h("div", { class: "legend" }, items.map(([cls, label]) => h("span", {}, h("i", { class: cls }), label)));
}

function attemptTable(v) {
  const now = Date.now() / 1000;
  return table(
    [["#", 1], ["Instance"], ["Capacity"], ["Zone"], ["$/h", 1], ["Started"], ["Ended"], ["Ran", 1], ["Exit", 1], ["Cause"], ["Cost", 1]],
    v.attempt_list.map((a) => h("tr", { "data-attempt": a.number },
      h("td", { class: "r" }, a.number), h("td", { class: "mono" }, a.instance_id || "–"), h("td", {}, a.spot ? "spot" : "on-demand"),
      h("td", {}, a.zone || "default"), h("td", { class: "r" }, a.price == null ? "–" : a.price.toFixed(3)),
      h("td", {}, clock(a.started_at)), h("td", {}, clock(a.ended_at)),
      h("td", { class: "r" }, a.started_at ? dur((a.ended_at || now) - a.started_at) : "–"),
      h("td", { class: "r" }, a.exit_status ?? "–"), h("td", {}, a.instance_id || a.cause ? cause(a.cause) : "launching"),
      h("td", { class: "r" }, money(a.cost)))),
  );
}

function lostTable(p) {
  if (!p.lost.length) return h("p", { class: "muted" }, p.attempts.length ? "No reclaim yet: nothing lost." : "No attempt has run yet.");
  return table([["Reclaim of attempt"], ["At step", 1], ["Next started at", 1], ["Steps lost", 1], ["≈ time lost", 1]],
    p.lost.map((l) => h("tr", { "data-lost": l.attempt },
      h("td", {}, `#${l.attempt} `, cause(l.cause)), h("td", { class: "r" }, l.at_step ?? "–"), h("td", { class: "r" }, l.resumed_at ?? "–"),
      h("td", { class: "r" }, l.lost_steps ?? "–"), h("td", { class: "r" }, l.lost_seconds == null ? "–" : dur(l.lost_seconds)))));
}

// The attempt timeline: one lane per attempt, time across. Provisioning is dashed, the run a bar
// coloured by capacity, the notice an amber line, the end a marker coloured by its cause, and a
// dashed arrow joins a reclaimed attempt to the relaunch that follows it.
function timelineChart(v, width) {
  const now = Date.now() / 1000;
  const list = v.attempt_list;
  if (!list.length) return h("p", { class: "muted" }, "No attempt yet: the controller launches one on its next pass.");
  const byKind = (kind) => Object.fromEntries(v.events.filter((e) => e.kind === kind).map((e) => [e.attempt, e.at]));
  const launching = byKind("launching"), notices = byKind("notice");
  const t0 = Math.min(v.created_at, ...list.map((a) => launching[a.number] ?? a.started_at ?? now));
  const t1 = Math.max(v.finished_at || now, ...list.map((a) => a.ended_at || 0), t0 + 1);
  const left = 150, right = 90, top = 8, lane = 38, axisH = 26;
  const W = Math.max(480, width), H = top + lane * list.length + axisH;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
  const svg = s("svg", { class: "chart timeline", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "attempt timeline" });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  const base = top + lane * list.length;
  for (const t of ticksFor(t0, t1)) {
    svg.append(s("line", { class: "grid", x1: x(t), x2: x(t), y1: top, y2: base }),
      s("text", { class: "tick", x: x(t), y: base + 17, "text-anchor": "middle" }, clock(t)));
  }
  svg.append(s("line", { class: "axis", x1: left, x2: W - right, y1: base, y2: base }));
  list.forEach((a, i) => {
    const y = top + i * lane, mid = y + lane / 2;
    const g = s("g", { class: "attempt", "data-attempt": a.number, "data-cause": a.cause || "live", "data-spot": a.spot });
    g.append(s("rect", { class: "lane", x: left, y: y + 3, width: W - left - right, height: lane - 6, rx: 4 }));
    g.append(s("text", { class: "lbl", x: 6, y: mid - 2 }, `#${a.number} ${a.spot ? "spot" : "on-demand"}`),
      s("text", { class: "tick", x: 6, y: mid + 12 }, a.zone || "default zone"));
    const asked = launching[a.number];
    const start = a.started_at;
    if (asked != null && (start ?? now) > asked)
      g.append(s("line", { class: "prov", x1: x(asked), x2: x(start ?? now), y1: mid, y2: mid }, title(`provisioning from ${clock(asked)}`)));
    if (start != null) {
      const end = a.ended_at ?? now;
      g.append(s("rect", { class: `bar ${a.spot ? "spot" : "od"} ${a.ended_at ? "" : "live"}`, x: x(start), y: y + 9, width: Math.max(2, x(end) - x(start)), height: lane - 18, rx: 3 },
        title(`attempt ${a.number} on ${a.instance_id}: ${clock(start)} → ${a.ended_at ? clock(a.ended_at) : "now"} (${dur(end - start)}), ${a.cause || "running"}`)));
      if (notices[a.number] != null) {
        const nx = x(notices[a.number]);
        g.append(s("line", { class: "notice", x1: nx, x2: nx, y1: y + 4, y2: y + lane - 4 }, title(`reclaim notice at ${clock(notices[a.number])}`)),
          s("path", { class: "noticehead", d: `M${nx - 5},${y + 2} L${nx + 5},${y + 2} L${nx},${y + 9} z` }));
      }
      if (a.ended_at) {
        const ex = x(a.ended_at);
        g.append(s("circle", { class: `mark ${a.cause}`, cx: ex, cy: mid, r: 6 }, title(`${a.cause} at ${clock(a.ended_at)}${a.exit_status != null ? `, exit ${a.exit_status}` : ""}`)),
          s("text", { class: `endlbl cause ${a.cause}`, x: ex + 10, y: mid + 4 }, { reclaim: "reclaimed", success: "done", error: "failed", cancel: "cancelled", switch: "switched" }[a.cause] || a.cause));
      }
    } else if (a.cause) {
      g.append(s("text", { class: `endlbl cause ${a.cause}`, x: x(asked ?? t0) + 6, y: mid + 4 }, a.cause));
    }
    svg.append(g);
  });
  list.forEach((a, i) => {  // relaunch arrows go on top of every lane
    const next = list[i + 1];
    if (!next || !a.ended_at || !["reclaim", "switch", "error"].includes(a.cause)) return;
    const from = [x(a.ended_at), top + i * lane + lane / 2 + 6];
    const toT = launching[next.number] ?? next.started_at ?? a.ended_at;
    const to = [Math.max(x(toT), from[0] + 2), top + (i + 1) * lane + lane / 2 - 4];
    const gap = (next.started_at ?? toT) - a.ended_at;
    svg.append(s("path", { class: "relaunch", "data-from": a.number, "data-to": next.number, "marker-end": "url(#arrow)",
      d: `M${from[0]},${from[1]} C${from[0]},${to[1]} ${to[0] - 10},${from[1]} ${to[0]},${to[1]}` }, title(`relaunched as attempt ${next.number}, ${dur(gap)} after the ${a.cause}`)));
  });
  return svg;
}

// Progress across attempts: steps across, one lane per attempt; the part of an attempt's range
// that the previous attempt had already run is work lost to the reclaim, shaded red.
function progressChart(p, width) {
  const rows = p.attempts.filter((r) => r.first != null);
  if (!rows.length) return h("p", { class: "muted" }, p.attempts.length
    ? "No progress reported yet. Print `step N` lines or call spotrun.report_progress(step) to see steps here."
    : "No attempt has run yet.");
  const lo = Math.min(...rows.map((r) => r.first)), hi = Math.max(...rows.map((r) => r.last), lo + 1);
  const left = 60, right = 20, top = 6, lane = 30, axisH = 24;
  const W = Math.max(320, width), H = top + lane * rows.length + axisH;
  const x = (step) => left + ((step - lo) / (hi - lo)) * (W - left - right);
  const svg = s("svg", { class: "chart progress", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "progress across attempts" });
  const base = top + lane * rows.length;
  const span = hi - lo, step = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000, 100000].find((k) => span / k <= 6) || Math.ceil(span / 6);
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step)
    svg.append(s("line", { class: "grid", x1: x(t), x2: x(t), y1: top, y2: base }), s("text", { class: "tick", x: x(t), y: base + 16, "text-anchor": "middle" }, num(t)));
  svg.append(s("line", { class: "axis", x1: left, x2: W - right, y1: base, y2: base }));
  let prevLast = null;
  rows.forEach((r, i) => {
    const y = top + i * lane;
    const g = s("g", { class: "pattempt", "data-attempt": r.attempt });
    g.append(s("text", { class: "lbl", x: 6, y: y + lane / 2 + 4 }, `#${r.attempt}`));
    g.append(s("rect", { class: "done", x: x(r.first), y: y + 7, width: Math.max(2, x(r.last) - x(r.first)), height: lane - 14, rx: 3 },
      title(`attempt ${r.attempt}: steps ${r.first} → ${r.last} (${r.source})`)));
    if (prevLast != null && r.first <= prevLast) {
      const until = Math.min(prevLast, r.last);
      g.append(s("rect", { class: "lost", x: x(r.first), y: y + 7, width: Math.max(2, x(until) - x(r.first)), height: lane - 14, rx: 3 },
        title(`steps ${r.first}–${until} were run again`)));
    }
    if (["reclaim", "switch"].includes(r.cause))
      g.append(s("rect", { class: "mark reclaim", x: x(r.last) - 1.5, y: y + 3, width: 3, height: lane - 6 }, title(`${r.cause} at step ${r.last}`)));
    svg.append(g);
    prevLast = prevLast == null ? r.last : Math.max(prevLast, r.last);
  });
  return svg;
}

function logPanel(ref) {
  const tabs = h("div", { class: "tabs" });
  const follow = h("input", { type: "checkbox", checked: true, id: "follow" });
  const pre = h("pre", { class: "log", id: "log" });
  const el = panel("Logs", "one log per attempt, kept after the instance is gone", tabs, pre);
  let attempt = null, offset = 0, chosenByUser = false, timer = null;
  const followLabel = h("label", { for: "follow" }, follow, "follow");

  async function poll() {
    if (attempt == null) return;
    const { body } = await api(`/api/jobs/${encodeURIComponent(ref)}/logs?attempt=${attempt}&offset=${offset}`);
    if (body.attempt !== attempt) return;
    if (body.offset < offset || offset === 0) pre.textContent = body.truncated ? "… (earlier output not shown)\n" : "";
    if (body.text) {
      pre.append(body.text);
      offset = body.next_offset;
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    }
  }
  function choose(n) {
    attempt = n; offset = 0; pre.textContent = "";
    tabs.querySelectorAll("button").forEach((b) => b.classList.toggle("on", Number(b.dataset.attempt) === n));
    poll();
  }
  return {
    el,
    update(v) {
      const numbers = v.attempt_list.filter((a) => a.instance_id).map((a) => a.number);
      const have = [...tabs.querySelectorAll("button")].map((b) => Number(b.dataset.attempt));
      if (numbers.join() !== have.join()) {
        tabs.replaceChildren(...numbers.map((n) => h("button", { class: "btn", "data-attempt": n, onclick: () => { chosenByUser = true; choose(n); } }, `attempt ${n}`)), followLabel);
        const want = chosenByUser && numbers.includes(attempt) ? attempt : numbers[numbers.length - 1];
        if (want != null) choose(want);
      }
      if (!timer) timers.push(timer = setInterval(() => follow.checked && !document.hidden && poll().catch(() => {}), LOG_POLL_MS));
    },
  };
}

// --- the fleet ----------------------------------------------------------------------------

function fleetPage(main) {
  const cards = h("div", { class: "cards" });
  const split = h("div");
  const chart = h("div", { id: "reclaims" });
  const toggle = h("div", { class: "tabs" });
  const zones = h("div");
  const decisions = h("div", { class: "events" });
  let by = "zone";
  main.append(h("h1", {}, "Fleet"), cards,
    panel("Reclaims over time", "per zone or instance type", toggle, chart),
    h("div", { class: "grid2" }, panel("Spot vs on-demand", "instance hours and money", split), panel("Zones", "where reclaims and errors happen", zones)),
    panel("Policy decisions", "what the market policy chose for `spot: auto` jobs with a deadline", decisions));
  let last = null;
  const draw = () => {
    toggle.replaceChildren(...[["zone", "by zone"], ["instance_type", "by instance type"]].map(([k, label]) =>
      h("button", { class: `btn ${by === k ? "on" : ""}`, onclick: () => { by = k; draw(); } }, label)));
    if (last) chart.replaceChildren(reclaimChart(last.reclaims_over_time[by], chart.clientWidth || 1100));
  };
  every(POLL_MS * 2.5, async () => {
    const [{ body: f }] = await Promise.all([api("/api/fleet"), refreshController()]);
    last = f;
    const active = STATES.filter((x) => !TERMINAL.has(x)).reduce((n, x) => n + f.jobs[x], 0);
    const reclaims = f.zones.reduce((n, z) => n + z.reclaims, 0);
    cards.replaceChildren(
      card("Active jobs", num(active), `${num(Object.values(f.jobs).reduce((a, b) => a + b, 0))} in all`),
      card("Reclaims", num(reclaims), `${num(f.zones.reduce((n, z) => n + z.attempts, 0))} attempts`, reclaims ? "bad" : ""),
      card("Spot hours", f.hours.spot.toFixed(2), money(f.cost.spot)),
      card("On-demand hours", f.hours.on_demand.toFixed(2), money(f.cost.on_demand)),
      card("Paid", money(f.cost.paid), `on-demand would be ${money(f.cost.on_demand_equivalent)}`),
      card("Saved", money(f.cost.saving), `${f.cost.saving_pct.toFixed(0)}% vs on-demand`, "good"),
    );
    const total = f.hours.spot + f.hours.on_demand;
    const pct = (x) => (total ? (100 * x) / total : 0);
    const spotBar = h("div", { class: "spot", title: `spot ${f.hours.spot.toFixed(2)} h` });
    const odBar = h("div", { class: "od", title: `on-demand ${f.hours.on_demand.toFixed(2)} h` });
    spotBar.style.width = `${pct(f.hours.spot)}%`;
    odBar.style.width = `${pct(f.hours.on_demand)}%`;
    split.replaceChildren(h("div", { class: "hbar" }, spotBar, odBar),
      legend([["spot", `spot ${pct(f.hours.spot).toFixed(0)}% · ${f.hours.spot.toFixed(2)} h · ${money(f.cost.spot)}`],
        ["od", `on-demand ${pct(f.hours.on_demand).toFixed(0)}% · ${f.hours.on_demand.toFixed(2)} h · ${money(f.cost.on_demand)}`]]),
      h("p", {}, "Saved ", h("b", { class: "saving" }, money(f.cost.saving)), ` against running the same hours on-demand (${money(f.cost.on_demand_equivalent)}).`));
    zones.replaceChildren(table([["Provider / zone"], ["Attempts", 1], ["Reclaims", 1], ["Errors", 1], ["Spot h", 1], ["On-demand h", 1], ["Reclaims / spot h", 1]],
      f.zones.map((z) => h("tr", { "data-zone": z.zone }, h("td", { class: "nw" }, `${z.provider} / ${z.zone}`), h("td", { class: "r" }, num(z.attempts)),
        h("td", { class: "r" }, z.reclaims ? h("span", { class: "cause reclaim" }, num(z.reclaims)) : "0"), h("td", { class: "r" }, num(z.errors)),
        h("td", { class: "r" }, z.spot_hours.toFixed(2)), h("td", { class: "r" }, z.on_demand_hours.toFixed(2)),
        h("td", { class: "r" }, z.reclaims_per_spot_hour ?? "–"))), "no attempt has run yet"));
    decisions.replaceChildren(table([["Time"], ["Job"], ["Attempt", 1], ["Decision"]], f.decisions.map((d) => h("tr", {},
      h("td", { class: "mono" }, clock(d.at)), h("td", {}, h("a", { href: `/jobs/${d.job_id}`, "data-link": true }, d.job_name)),
      h("td", { class: "r" }, d.attempt ?? ""), h("td", { class: "dmsg" }, d.message))),
      "no decisions yet: jobs with `spot: auto` and a deadline let the policy choose spot or on-demand"));
    draw();
  });
}

const PALETTE = ["#2563eb", "#dc2626", "#f59e0b", "#0f766e", "#8b5cf6", "#db2777", "#65a30d", "#0891b2", "#9ca3af"];

function reclaimChart(data, width) {
  if (!data.series.length) return h("p", { class: "muted" }, "No reclaims yet.");
  const series = data.series.slice(0, PALETTE.length);
  const n = data.buckets;
  const totals = Array.from({ length: n }, (_, i) => series.reduce((a, sr) => a + sr.counts[i], 0));
  const max = Math.max(1, ...totals);
  const left = 40, right = 12, top = 8, chartH = 180, axisH = 24;
  const W = Math.max(480, width), H = top + chartH + axisH;
  const bw = (W - left - right) / n;
  const y = (v) => top + chartH - (v / max) * chartH;
  const svg = s("svg", { class: "chart reclaims", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "reclaims over time" });
  for (let v = 0; v <= max; v += Math.max(1, Math.ceil(max / 4)))
    svg.append(s("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }), s("text", { class: "tick", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, v));
  for (let i = 0; i < n; i++) {
    let acc = 0;
    series.forEach((sr, k) => {
      const c = sr.counts[i];
      if (!c) return;
      svg.append(s("rect", { x: left + i * bw + 1, y: y(acc + c), width: Math.max(1, bw - 2), height: y(acc) - y(acc + c), fill: PALETTE[k], "data-series": sr.key },
        title(`${sr.key}: ${c} reclaim${c > 1 ? "s" : ""} from ${clock(data.start + i * data.bucket_s)}`)));
      acc += c;
    });
  }
  const every_ = Math.max(1, Math.ceil(n / 8));
  for (let i = 0; i < n; i += every_)
    svg.append(s("text", { class: "tick", x: left + i * bw + bw / 2, y: top + chartH + 16, "text-anchor": "middle" }, clock(data.start + i * data.bucket_s)));
  svg.append(s("line", { class: "axis", x1: left, x2: W - right, y1: y(0), y2: y(0) }));
  const leg = h("div", { class: "legend" }, series.map((sr, k) => {
    const sw = h("i");
    sw.style.background = PALETTE[k];
    return h("span", {}, sw, `${sr.key} (${sr.counts.reduce((a, b) => a + b, 0)})`);
  }), h("span", {}, `bars of ${dur(data.bucket_s)}`));
  return h("div", {}, svg, leg);
}

route();
