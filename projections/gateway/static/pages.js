// The pages: overview, tasks, agents, dead letters and rejections (task detail is in task.js).
import { bars, lines } from "/ui/static/charts.js";
import { api, badge, can, dur, fill, h, pct, table, taskLink, time, withQuery } from "/ui/static/dom.js";
import { taskPage } from "/ui/static/task.js";

const REFRESH_MS = 5000;
const STATES = ["", "blocked", "scheduled", "queued", "assigned", "running", "retry_wait", "completed",
                "dead_lettered", "cancelled"];
const PRIORITIES = ["", "critical", "high", "medium", "low"];

// re-render every few seconds while live; as of a cut nothing changes
function refreshing(render, asOf) {
  let timer = null, stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await render(); } catch (err) { document.getElementById("status").textContent = err.message; }
    if (!stopped && !asOf) timer = setTimeout(tick, REFRESH_MS);
  };
  return { first: render().then(() => { if (!asOf) timer = setTimeout(tick, REFRESH_MS); }),
           stop() { stopped = true; clearTimeout(timer); } };
}

function stat(label, value, id) {
  return h("div", { class: "stat" }, h("div", { class: "value", id }, value), h("div", { class: "label" }, label));
}

function percentiles(name, p) {
  return h("tr", {}, h("th", {}, name), h("td", {}, dur(p.p50)), h("td", {}, dur(p.p95)), h("td", {}, dur(p.p99)),
           h("td", {}, p.count));
}

function latencyChart(w) {
  const pts = (s, k) => s.series.map((b) => ({ x: b.minute, y: b[k] }));
  const st = w.submit_to_start_ms, done = w.submit_to_complete_ms;
  return lines([{ cls: "p50", points: pts(done, "p50") }, { cls: "p95", points: pts(done, "p95") },
                { cls: "p99", points: pts(done, "p99") }, { cls: "start", points: pts(st, "p95") }],
               "submit→complete p50/p95/p99 and submit→start p95 over time", w.from_ms, w.until_ms);
}

function queueCard(q, asOf) {
  const w = q.window;
  const link = (state, text) => h("a", { href: `#/tasks?${new URLSearchParams({ queue: q.queue, state, ...(asOf ? { as_of: asOf } : {}) })}` }, text);
  return h("section", { class: "card queue", "data-queue": q.queue },
    h("h2", {}, `queue ${q.queue}`),
    h("div", { class: "stats" },
      stat("waiting", q.depth, `depth-${q.queue}`), stat("running", q.running, `running-${q.queue}`),
      stat("completed", q.completed, `completed-${q.queue}`), stat("dead-lettered", q.dead_lettered, `dead-${q.queue}`),
      stat("error rate", pct(w.error_rate)), stat("dead-letter rate", pct(w.dead_letter_rate))),
    h("div", { class: "cols" },
      h("div", {}, h("h3", {}, "Depth by priority"),
        table(["priority", "waiting"], Object.entries(q.depth_by_priority).map(([p, n]) =>
          h("tr", {}, h("td", {}, link("queued", p)), h("td", { class: `prio-${p}` }, n))))),
      h("div", {}, h("h3", {}, `Throughput (completed per minute, last ${Math.round((w.until_ms - w.from_ms) / 60000) || "—"} min)`),
        bars(w.throughput.map((m) => ({ x: m.minute, y: m.completed })), "completed per minute", w.from_ms, w.until_ms),
        h("h3", {}, "Latency over time"), latencyChart(w),
        h("p", { class: "legend" }, h("span", { class: "k p50" }, "p50"), h("span", { class: "k p95" }, "p95"),
          h("span", { class: "k p99" }, "p99"), " submit→complete; ", h("span", { class: "k start" }, "p95"), " submit→start"))),
    table(["", "p50", "p95", "p99", "n"], [percentiles("submit→start", w.submit_to_start_ms),
      percentiles("submit→complete", w.submit_to_complete_ms), percentiles("queue wait", w.queue_wait_ms),
      percentiles("run time", w.run_time_ms)], { class: "latency" }),
    h("p", { class: "muted" }, `${q.submitted} submitted · ${q.failed} failed attempts · ${q.cancelled} cancelled · `,
      `${q.rejected} rejected events · oldest waiting ${dur(q.oldest_waiting_age_ms)}`));
}

async function overview({ main, asOf }) {
  const render = async () => {
    const o = await api(withQuery("/ui/api/overview", { as_of: asOf }));
    const a = o.agents;
    fill(main, h("h1", {}, "Overview"),
      h("section", { class: "card" }, h("h2", {}, "Agents"), h("div", { class: "stats" },
        stat("online", a.online, "agents-online"), stat("busy", a.busy, "agents-busy"),
        stat("quarantined", a.quarantined, "agents-quarantined"), stat("seen", a.total, "agents-total"))),
      o.queues.length ? o.queues.map((q) => queueCard(q, asOf)) : h("p", { id: "no-queues" }, "No queue has any event yet."),
      h("p", { class: "muted" }, `newest event ${time(o.newest_event_at)}`));
  };
  const r = refreshing(render, asOf);
  await r.first;
  return r;
}

function taskRow(t, asOf) {
  return h("tr", { "data-task-id": t.task_id, "data-state": t.state },
    h("td", {}, taskLink(t.task_id, asOf)), h("td", {}, t.queue), h("td", {}, t.task_type),
    h("td", { class: `prio-${t.priority}` }, t.priority), h("td", {}, badge(t.state)), h("td", {}, t.agent_id || "—"),
    h("td", {}, t.attempt), h("td", {}, time(t.submitted_at)));
}

function select(name, options, value) {
  return h("select", { name }, options.map((o) => h("option", { value: o, selected: o === value }, o || `any ${name}`)));
}

async function tasks({ main, params, asOf }) {
  const f = Object.fromEntries(params.entries());
  const field = (name, placeholder) => h("input", { name, placeholder, value: f[name] || "" });
  const form = h("form", { class: "filters", id: "task-filters" },
    field("q", "search id or correlation id"), field("queue", "queue"), select("state", STATES, f.state || ""),
    select("priority", PRIORITIES, f.priority || ""), field("agent", "agent"), field("session_id", "session"),
    field("since", "submitted since"), field("until", "until"), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
    if (asOf) q.set("as_of", asOf);
    location.hash = `#/tasks?${q}`;
  });
  const page = await api(withQuery("/ui/api/tasks", { ...f, limit: f.limit || 50 }));
  const back = f.cursor ? h("a", { href: "javascript:history.back()", class: "button" }, "← Previous") : null;
  const next = page.next_cursor ? h("a", { class: "button", id: "next-page",
    href: `#/tasks?${new URLSearchParams({ ...f, cursor: page.next_cursor })}` }, "Next page →") : null;
  fill(main, h("h1", {}, "Tasks"), form,
    table(["task", "queue", "type", "priority", "state", "agent", "attempt", "submitted"],
          page.tasks.map((t) => taskRow(t, asOf)), { id: "task-table" }),
    page.tasks.length ? null : h("p", { id: "no-tasks" }, "No task matches (a sparse filter may need the next page)."),
    h("div", { class: "pager" }, back, next));
  return null;
}

function seatRow(s) {
  const b = s.breaker;
  return h("tr", { "data-seat": `${s.agent_id}/${s.queue}` }, h("td", {}, s.queue), h("td", {}, s.active ? "active" : "left"),
    h("td", {}, `${s.load}/${s.slots}`), h("td", {}, pct(s.success_ewma)), h("td", {}, dur(s.latency_ewma_ms)),
    h("td", { class: `breaker-${b.state}` }, b.state + (b.until ? ` until ${time(b.until)}` : ""),
      b.reason ? h("div", { class: "muted" }, b.reason) : null),
    h("td", {}, s.consecutive_failures), h("td", {}, `${s.completed} / ${s.failed}`));
}

async function agents({ main, asOf }) {
  const render = async () => {
    const { agents: list } = await api(withQuery("/ui/api/agents", { as_of: asOf }));
    fill(main, h("h1", {}, "Agents"), list.length ? null : h("p", {}, "No agent has joined."),
      list.map((a) => h("section", { class: "card agent", "data-agent": a.agent_id },
        h("h2", {}, a.agent_id, " ", badge(a.active ? (a.load ? "busy" : "idle") : "offline"),
          a.quarantined ? badge("quarantined") : null),
        h("div", { class: "stats" }, stat("slots", a.slots), stat("held now", a.held_now),
          stat("utilization", pct(a.utilization)), stat("tasks ever", a.held_ever),
          stat("last heartbeat", a.heartbeat ? time(a.heartbeat.sent_at) : "—")),
        table(["queue", "seat", "load/slots", "success (EWMA)", "latency (EWMA)", "breaker", "consecutive failures",
               "completed / failed"], a.queues.map(seatRow)),
        h("p", {}, "Holding: ", a.held.length ? a.held.map((t) => [taskLink(t.task_id, asOf), " "]) : "nothing"))));
  };
  const r = refreshing(render, asOf);
  await r.first;
  return r;
}

async function redrive(taskId, button) {
  button.disabled = true;
  try {
    await api(`/v1/dead-letters/${encodeURIComponent(taskId)}/redrive`, { method: "POST" });
    button.replaceWith(h("span", { class: "ok", id: `redriven-${taskId}` }, "redriven"));
  } catch (err) {
    button.disabled = false;
    button.after(h("span", { class: "error redrive-error" }, err.message));
  }
}

async function deadLetters({ main, params, asOf }) {
  const dl = await api(withQuery("/ui/api/dead-letters", { as_of: asOf, cursor: params.get("cursor") }));
  const admin = can() && !asOf; // can() with no role: admin only
  const rows = dl.dead_letters.map((d) => h("tr", { "data-task-id": d.task_id },
    h("td", {}, taskLink(d.task_id, asOf)), h("td", {}, d.queue), h("td", {}, d.task_type), h("td", {}, d.priority),
    h("td", {}, d.reason || ""), h("td", {}, d.error || ""), h("td", {}, `${d.attempts}/${d.max_attempts}`),
    h("td", {}, time(d.dead_lettered_at)),
    h("td", {}, h("button", { type: "button", class: "redrive", disabled: !admin,
      title: admin ? "put it back in its queue" : "admins only (and not as of a past cut)",
      onclick: (e) => redrive(d.task_id, e.target) }, "Redrive"))));
  const parts = [h("h1", {}, "Dead letters"),
    table(["task", "queue", "type", "priority", "reason", "error", "attempts", "when", ""], rows, { id: "dead-letters" }),
    dl.dead_letters.length ? null : h("p", { id: "no-dead-letters" }, "No dead letter."),
    h("h1", {}, "Rejections")];
  if (can("auditor")) {
    const rj = await api(withQuery("/ui/api/rejections", { as_of: asOf }));
    parts.push(table(["position", "event", "task", "agent", "actor", "when", "reason"], rj.rejections.map((r) =>
      h("tr", {}, h("td", {}, r.position), h("td", {}, r.event_type), h("td", {}, r.task_id ? taskLink(r.task_id, asOf) : "—"),
        h("td", {}, r.agent_id || "—"), h("td", {}, r.actor), h("td", {}, time(r.occurred_at)), h("td", {}, r.reason || ""))),
      { id: "rejections" }), rj.rejections.length ? null : h("p", { id: "no-rejections" }, "No rejected event."));
  } else {
    parts.push(h("p", { class: "muted" }, "Rejections are for auditors."));
  }
  fill(main, parts);
  return null;
}

export const pages = { overview, tasks, task: taskPage, agents, "dead-letters": deadLetters };
