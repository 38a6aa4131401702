#!/usr/bin/env bash
# A taskfold agent in shell: curl and jq, no Kafka client. It shows the HTTP agent protocol:
#
#   1. POST /v1/agents/ID/join        seat the agent in its queue
#   2. POST /v1/agents/ID/heartbeat   every loop (the scheduler only assigns to live agents)
#   3. GET  /v1/agents/ID/assignments?wait=S   long-poll: accepted assignments not reported on yet
#   4. for each: POST .../tasks/TASK/started, .../progress, then .../completed (or .../failed),
#      each with the attempt number (the fencing token); a retried POST is a duplicate, not a second report
#   5. POST /v1/agents/ID/leave       on the way out (Ctrl-C, or after TASKFOLD_MAX_TASKS tasks)
#
# Usage: TASKFOLD_URL=http://127.0.0.1:8080 TASKFOLD_TOKEN=<agent token bound to ID> \
#            examples/http_agent.sh ID QUEUE [SLOTS]
# The handler below echoes the payload back; replace `handle` with real work.
set -euo pipefail

agent=${1:?usage: http_agent.sh AGENT_ID QUEUE [SLOTS]}
queue=${2:?usage: http_agent.sh AGENT_ID QUEUE [SLOTS]}
slots=${3:-1}
url=${TASKFOLD_URL:-http://127.0.0.1:8080}
wait_s=${TASKFOLD_WAIT:-10}
max_tasks=${TASKFOLD_MAX_TASKS:-0}  # 0: serve until interrupted

# api METHOD PATH [JSON]: one call; fails loudly on an HTTP error, printing the error body.
api() {
  curl --silent --show-error --fail-with-body -X "$1" "$url$2" \
    -H "Authorization: Bearer ${TASKFOLD_TOKEN:-}" -H 'Content-Type: application/json' \
    ${3:+--data "$3"}
}

# handle PAYLOAD: the task's work; prints its result as JSON.
handle() {
  jq -cn --argjson payload "$1" --arg agent "$agent" '{echo: $payload, agent: $agent}'
}

# report PATH JSON: a report the log may refuse (say the attempt was taken away): say so, go on.
report() {
  local answer
  answer=$(api POST "$1" "$2") || echo "refused: $answer" >&2
}

leave() { api POST "/v1/agents/$agent/leave" >/dev/null || true; }

api POST "/v1/agents/$agent/join" "$(jq -cn --arg q "$queue" --argjson n "$slots" '{queues: [$q], slots: $n}')" >/dev/null
trap 'leave; exit 130' INT TERM
echo "agent $agent serving queue $queue at $url"

done_tasks=0
while [ "$max_tasks" -eq 0 ] || [ "$done_tasks" -lt "$max_tasks" ]; do
  api POST "/v1/agents/$agent/heartbeat" >/dev/null
  while read -r assignment; do
    [ -n "$assignment" ] || continue
    task=$(jq -r .task_id <<<"$assignment")
    attempt=$(jq -r .attempt <<<"$assignment")
    path="/v1/agents/$agent/tasks/$(jq -rn --arg t "$task" '$t|@uri')"
    report "$path/started" "{\"attempt\": $attempt}"
    report "$path/progress" "$(jq -cn --argjson a "$attempt" \
      '{attempt: $a, chunks: [{seq: 0, kind: "log", content: "running in bash"}]}')"
    if result=$(handle "$(jq -c .payload <<<"$assignment")"); then
      report "$path/completed" "$(jq -cn --argjson a "$attempt" --argjson r "$result" '{attempt: $a, result: $r}')"
      echo "completed $task (attempt $attempt)"
    else
      report "$path/failed" "$(jq -cn --argjson a "$attempt" '{attempt: $a, error: "handler failed"}')"
      echo "failed $task (attempt $attempt)"
    fi
    done_tasks=$((done_tasks + 1))
  done < <(api GET "/v1/agents/$agent/assignments?wait=$wait_s" | jq -c '.[]')
done
leave
