-- Queries of the PostgreSQL work queue (popflow/engine/postgres_queue.py).

-- name: claim_candidates
-- Ready agendas in line order, each reserved for this transaction by a per-stream advisory
-- lock that is tried, never waited for: agendas another claimer is taking right now are
-- skipped. Row locks are deliberately not used: a locking read can keep a lock on a row that
-- a concurrent claim just dispatched (it fails the recheck but stays locked), and the append
-- that starts that agenda, holding the event store's ordering lock, would wait for it while
-- this claim waits for the ordering lock: a deadlock. The claim's append is still checked
-- against the stream's version, so a candidate that stopped being ready is simply skipped.
WITH line AS MATERIALIZED (
    SELECT stream_id, agenda_id, enqueued_position
    FROM popflow.agenda_queue
    WHERE status = 'ready' AND ($2::text[] IS NULL OR insight_id = ANY ($2::text[]))
    ORDER BY enqueued_position
    LIMIT $1 * 2 + 8
)
SELECT stream_id, agenda_id
FROM line
WHERE pg_try_advisory_xact_lock($3, hashtext(stream_id))
LIMIT $1;

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
