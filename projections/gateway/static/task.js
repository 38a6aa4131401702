// Task detail: the task, its timeline with verdicts and assignment explanations, its attempts and
// leases, and its progress transcript, followed live over the task's SSE stream (which resumes
// after a reconnect by itself: EventSource sends Last-Event-ID, the stream's cursor).
import { api, badge, can, dur, fill, h, json, table, time, withQuery } from "/ui/static/dom.js";

const TYPES = ["TaskSubmitted", "DependencyResolved", "TaskAssigned", "TaskStarted", "TaskCompleted", "TaskFailed",
               "TaskLeaseExpired", "TaskTimedOut", "TaskCancelRequested", "TaskCancelled", "TaskRedriven"];
const TERMINAL = new Set(["completed", "dead_lettered", "cancelled"]);

function explanation(e) {
  return h("div", { class: "explain" },
    h("div", {}, `strategy ${e.strategy} chose `, h("b", {}, e.agent_id), ` for attempt ${e.attempt}, lease ${dur(e.lease_ms)}`),
    table(["candidate", "score", "load/slots", "eligible", "why"], (e.candidates || []).map((c) =>
      h("tr", { class: c.agent_id === e.agent_id ? "chosen" : "" }, h("td", {}, c.agent_id), h("td", {}, c.score.toFixed(3)),
        h("td", {}, `${c.load}/${c.slots}`), h("td", {}, c.eligible ? "yes" : "no"), h("td", {}, c.reason || "")))));
}

function detail(e) {
  switch (e.type) {
    case "TaskAssigned": return explanation(e);
    case "TaskCompleted": return h("div", {}, "result ", h("code", {}, e.result));
    case "TaskFailed": return h("div", {}, `${e.retryable ? "retryable" : "final"}: ${e.error}`);
    case "TaskStarted": return h("div", {}, `attempt ${e.attempt} on ${e.agent_id}`);
    case "TaskSubmitted": return h("div", {}, `${e.task_type}, priority ${e.priority}, by ${e.actor}`);
    default: return e.attempt ? h("div", {}, `attempt ${e.attempt}`) : null;
  }
}

function eventItem(row) {
  const e = row.event, v = row.verdict;
  return h("li", { "data-type": e.type, "data-position": row.position, "data-verdict": v.outcome, class: `v-${v.outcome}` },
    h("div", { class: "when" }, time(e.occurred_at), h("span", { class: "muted" }, ` @${row.position}`)),
    h("div", { class: "what" }, h("b", {}, e.type), " ", badge(v.outcome), v.reason ? h("span", { class: "reason" }, ` ${v.reason}`) : null,
      detail(e)));
}

function chunkItem(row) {
  const c = row.chunk;
  const body = typeof c.content === "string" ? c.content : JSON.stringify(c.content);
  return h("div", { class: `chunk k-${c.kind}`, "data-kind": c.kind, "data-position": row.position },
    h("span", { class: "muted" }, `#${c.attempt}.${c.seq} ${c.kind} `), body);
}

// attempts and leases, from the accepted events of the timeline
function attempts(rows) {
  const by = new Map();
  for (const { event: e, verdict: v } of rows) {
    if (!e.attempt || v.outcome !== "accepted") continue;
    const a = by.get(e.attempt) || { attempt: e.attempt, end: "—" };
    if (e.type === "TaskAssigned") Object.assign(a, { agent: e.agent_id, assigned: e.occurred_at, lease: e.lease_ms });
    else if (e.type === "TaskStarted") a.started = e.occurred_at;
    else { a.end = e.type.replace(/^Task/, ""); a.ended = e.occurred_at; }
    by.set(e.attempt, a);
  }
  return table(["attempt", "agent", "assigned", "lease", "started", "ended", "how"], [...by.values()].map((a) =>
    h("tr", { "data-attempt": a.attempt }, h("td", {}, a.attempt), h("td", {}, a.agent || "—"), h("td", {}, time(a.assigned)),
      h("td", {}, dur(a.lease)), h("td", {}, time(a.started)), h("td", {}, time(a.ended)), h("td", {}, a.end))), { id: "attempts" });
}

function header(t, asOf, reload) {
  const actions = [];
  if (!asOf && !TERMINAL.has(t.state) && can("submitter")) {
    actions.push(h("button", { type: "button", id: "cancel", onclick: async (e) => {
      e.target.disabled = true;
      try { await api(`/v1/tasks/${encodeURIComponent(t.task_id)}/cancel`, { method: "POST" }); } catch (err) { alert(err.message); }
      reload();
    } }, "Cancel"));
  }
  if (!asOf && t.state === "dead_lettered" && can()) {
    actions.push(h("button", { type: "button", id: "redrive", onclick: async (e) => {
      e.target.disabled = true;
      try { await api(`/v1/dead-letters/${encodeURIComponent(t.task_id)}/redrive`, { method: "POST" }); } catch (err) { alert(err.message); }
      reload();
    } }, "Redrive"));
  }
  return h("section", { class: "card" },
    h("h1", {}, "Task ", h("code", { id: "task-id" }, t.task_id), " ", h("span", { id: "task-state" }, badge(t.state))),
    h("div", { class: "stats" },
      ...[["queue", t.queue], ["type", t.task_type], ["priority", t.priority], ["attempt", `${t.attempt}/${t.max_attempts}`],
          ["agent", t.agent_id || "—"], ["submitted", time(t.submitted_at)], ["finished", time(t.finished_at)],
          ["correlation", t.correlation_id || "—"], ["session", t.session_id || "—"]].map(([k, v]) =>
        h("div", { class: "stat" }, h("div", { class: "value small" }, v), h("div", { class: "label" }, k)))),
    t.reason ? h("p", {}, "why: ", h("span", { id: "task-reason" }, t.reason)) : null,
    t.error ? h("p", { class: "error" }, t.error) : null,
    h("details", { open: true }, h("summary", {}, "payload and result"), h("div", { class: "cols even" },
      h("div", {}, h("h3", {}, "payload"), json(t.payload)),
      h("div", {}, h("h3", {}, "result"), h("div", { id: "task-result" }, json(t.result))))),
    h("div", { class: "actions" }, actions));
}

export async function taskPage({ main, arg, asOf }) {
  const url = withQuery(`/ui/api/tasks/${encodeURIComponent(arg)}`, { as_of: asOf });
  const rows = [], seen = new Set();
  const head = h("div", {}), attemptBox = h("div", {}), live = h("span", { id: "live", class: "badge" }, asOf ? "as of a past cut" : "connecting…");
  const timeline = h("ol", { id: "timeline", class: "timeline" }), transcript = h("div", { id: "transcript", class: "transcript" });
  let source = null, pending = null;
  const loadHead = async () => {
    const d = await api(url);
    head.replaceChildren(header(d.task, asOf, loadHead));
    return d;
  };
  const first = await loadHead();
  fill(main, head, h("section", { class: "card" }, h("h2", {}, "Attempts and leases"), attemptBox),
    h("div", { class: "cols even" },
      h("section", { class: "card" }, h("h2", {}, "Timeline ", live), timeline),
      h("section", { class: "card" }, h("h2", {}, "Progress transcript"), transcript)));
  const duplicate = (key) => {
    if (!seen.has(key)) { seen.add(key); return false; }
    live.dataset.duplicates = String(Number(live.dataset.duplicates || 0) + 1); // a resume must never repeat
    return true;
  };
  const addEvent = (row) => {
    if (duplicate("e" + row.position)) return;
    rows.push(row);
    timeline.append(eventItem(row));
    attemptBox.replaceChildren(attempts(rows));
  };
  const addChunk = (row) => {
    if (duplicate("c" + row.position)) return;
    transcript.append(chunkItem(row));
  };
  if (asOf) {
    first.events.forEach(addEvent);
    first.chunks.forEach(addChunk);
    attemptBox.replaceChildren(attempts(rows));
    return null;
  }
  source = new EventSource(`/v1/tasks/${encodeURIComponent(arg)}/events`, { withCredentials: true });
  const onEvent = (m) => {
    addEvent(JSON.parse(m.data));
    clearTimeout(pending);
    pending = setTimeout(() => loadHead().catch(() => {}), 150); // the header follows the timeline
  };
  for (const type of TYPES) source.addEventListener(type, onEvent);
  source.addEventListener("progress", (m) => addChunk(JSON.parse(m.data)));
  source.addEventListener("end", () => {
    live.dataset.ended = "1";
    source.close();
    loadHead().catch(() => {}).finally(() => { live.textContent = "finished"; }); // the header shows the end first
  });
  source.onopen = () => { live.textContent = "live"; };
  source.onerror = () => {
    if (live.dataset.ended) return;
    live.textContent = "reconnecting…";
    live.dataset.reconnects = String(Number(live.dataset.reconnects || 0) + 1);
  };
  attemptBox.replaceChildren(attempts(rows));
  return { stop() { if (source) source.close(); clearTimeout(pending); } };
}
