-- Queries of the PostgreSQL work queue (popflow/engine/postgres_queue.py).

-- name: claim_candidates
-- Ready agendas in line order; rows another claimer is taking right now are skipped.
SELECT stream_id, agenda_id
FROM popflow.agenda_queue
WHERE status = 'ready' AND ($2::text[] IS NULL OR insight_id = ANY ($2::text[]))
ORDER BY enqueued_position
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: entries
SELECT stream_id, agenda_id, resource_pool_id, insight_id, customer_id, status,
       enqueued_position, dispatch, worker_id
FROM popflow.agenda_queue
ORDER BY enqueued_position;

-- name: rebuild
SELECT popflow.rebuild_queue();

-- name: register
INSERT INTO popflow.workers (worker_id, host, pid) VALUES ($1, $2, $3)
ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now();

-- name: heartbeat
UPDATE popflow.workers SET heartbeat_at = now() WHERE worker_id = $1;

-- name: retire
DELETE FROM popflow.workers WHERE worker_id = $1;

-- name: expired_leases
SELECT q.agenda_id, q.stream_id, q.worker_id, q.dispatch
FROM popflow.agenda_queue q
LEFT JOIN popflow.workers w ON w.worker_id = q.worker_id
WHERE q.status <> 'ready'
  AND (w.worker_id IS NULL OR w.heartbeat_at < now() - make_interval(secs => $1))
ORDER BY q.enqueued_position
LIMIT $2;
