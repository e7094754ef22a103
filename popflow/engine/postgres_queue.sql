-- Queries of the PostgreSQL work queue (popflow/engine/postgres_queue.py).

-- Claims (postgres_queue.py, following popflow/engine/scheduling.py). Reading is never
-- done under row locks: a locking read can keep a lock on a row that a concurrent claim just
-- dispatched (it fails the recheck but stays locked), and the append that starts that agenda,
-- holding the event store's ordering lock, would wait for it while this claim waits for the
-- ordering lock: a deadlock. Instead agendas are reserved by per-stream advisory locks that
-- are tried, never waited for (reserve), and claims on a serialised insight (RoundRobin or a
-- queueSize) wait for each other on a per-insight advisory lock, taken in insight order.
-- Each claim's append is still checked against the stream's version, so an agenda that
-- stopped being ready in the meantime is simply skipped.

-- name: claim_lines
-- The insights of the claim's scope ($2: insight ids or NULL; $3: resource pool or NULL) that
-- have ready agendas, oldest waiting first, with their Insight document and their ready
-- agendas counted up to $1. Without named insights, the insights are found by a skip scan
-- of the ready index (one probe per insight, whatever the queue's length).
WITH RECURSIVE waiting (insight_id) AS (
    (SELECT insight_id FROM popflow.agenda_queue WHERE status = 'ready'
     ORDER BY insight_id LIMIT 1)
    UNION ALL
    SELECT (SELECT q.insight_id FROM popflow.agenda_queue q
            WHERE q.status = 'ready' AND q.insight_id > w.insight_id
            ORDER BY q.insight_id LIMIT 1)
    FROM waiting w WHERE w.insight_id IS NOT NULL
),
scope AS (
    SELECT insight_id FROM waiting WHERE $2::text[] IS NULL AND insight_id IS NOT NULL
    UNION
    SELECT unnest($2::text[])
)
SELECT s.insight_id, head.resource_pool_id, head.enqueued_position AS oldest_position,
       d.body::text AS insight,
       (SELECT count(*) FROM (SELECT 1 FROM popflow.agenda_queue r
                              WHERE r.insight_id = s.insight_id AND r.status = 'ready'
                              LIMIT $1) AS counted) AS ready
FROM scope s
CROSS JOIN LATERAL (
    SELECT q.resource_pool_id, q.enqueued_position FROM popflow.agenda_queue q
    WHERE q.insight_id = s.insight_id AND q.status = 'ready'
    ORDER BY q.enqueued_position LIMIT 1
) AS head
LEFT JOIN popflow.documents d ON d.kind = 'insight' AND d.id = s.insight_id
WHERE $3::text IS NULL OR head.resource_pool_id = $3::text
ORDER BY head.enqueued_position;

-- name: claim_lines_everywhere
-- claim_lines for a claim of any insight in any pool (the default worker's). The same query
-- without the scope's parameters: PostgreSQL keeps a generic plan of it, where claim_lines,
-- whose plan depends on whether a scope is given, is planned anew on every call (about
-- 0.3 ms of server time per claim, measured).
WITH RECURSIVE waiting (insight_id) AS (
    (SELECT insight_id FROM popflow.agenda_queue WHERE status = 'ready'
     ORDER BY insight_id LIMIT 1)
    UNION ALL
    SELECT (SELECT q.insight_id FROM popflow.agenda_queue q
            WHERE q.status = 'ready' AND q.insight_id > w.insight_id
            ORDER BY q.insight_id LIMIT 1)
    FROM waiting w WHERE w.insight_id IS NOT NULL
)
SELECT s.insight_id, head.resource_pool_id, head.enqueued_position AS oldest_position,
       d.body::text AS insight,
       (SELECT count(*) FROM (SELECT 1 FROM popflow.agenda_queue r
                              WHERE r.insight_id = s.insight_id AND r.status = 'ready'
                              LIMIT $1) AS counted) AS ready
FROM waiting s
CROSS JOIN LATERAL (
    SELECT q.resource_pool_id, q.enqueued_position FROM popflow.agenda_queue q
    WHERE q.insight_id = s.insight_id AND q.status = 'ready'
    ORDER BY q.enqueued_position LIMIT 1
) AS head
LEFT JOIN popflow.documents d ON d.kind = 'insight' AND d.id = s.insight_id
WHERE s.insight_id IS NOT NULL
ORDER BY head.enqueued_position;

-- name: serialize
SELECT count(pg_advisory_xact_lock($2, hashtext(insight_id)))
FROM (SELECT unnest($1::text[]) AS insight_id ORDER BY 1) AS sorted;

-- name: leased
SELECT count(*) FROM popflow.agenda_queue WHERE insight_id = $1 AND status <> 'ready';

-- name: oldest
SELECT * FROM popflow.agenda_queue
WHERE insight_id = $1 AND status = 'ready'
ORDER BY enqueued_position
LIMIT $2;

-- name: by_priority_level
-- The $2 longest in line of each priority, and every agenda that re-entered (bounded).
SELECT q.* FROM generate_series(-10, 10) AS level
CROSS JOIN LATERAL (
    SELECT * FROM popflow.agenda_queue
    WHERE insight_id = $1 AND status = 'ready' AND priority = level
    ORDER BY enqueued_position LIMIT $2
) AS q
UNION
SELECT * FROM (
    SELECT * FROM popflow.agenda_queue
    WHERE insight_id = $1 AND status = 'ready' AND reentries > 0
    ORDER BY enqueued_position LIMIT $2 * 21
) AS reentered;

-- name: by_customer
-- Each customer waiting in the insight (skip scan), with its $2 longest in line.
WITH RECURSIVE customers (customer_id) AS (
    (SELECT customer_id FROM popflow.agenda_queue
     WHERE insight_id = $1 AND status = 'ready' ORDER BY customer_id LIMIT 1)
    UNION ALL
    SELECT (SELECT q.customer_id FROM popflow.agenda_queue q
            WHERE q.insight_id = $1 AND q.status = 'ready' AND q.customer_id > c.customer_id
            ORDER BY q.customer_id LIMIT 1)
    FROM customers c WHERE c.customer_id IS NOT NULL
)
SELECT q.* FROM customers c
CROSS JOIN LATERAL (
    SELECT * FROM popflow.agenda_queue
    WHERE insight_id = $1 AND status = 'ready' AND customer_id = c.customer_id
    ORDER BY enqueued_position LIMIT $2
) AS q
WHERE c.customer_id IS NOT NULL
ORDER BY q.customer_id, q.enqueued_position;

-- name: pool_customers
SELECT id FROM popflow.documents
WHERE kind = 'customer' AND body->>'resourcePoolId' = $1
ORDER BY added_time, id COLLATE "C";

-- name: pending_customers
SELECT pending_customer_ids FROM popflow.insight_schedules WHERE insight_id = $1;

-- name: save_pending_customers
INSERT INTO popflow.insight_schedules (insight_id, pending_customer_ids) VALUES ($1, $2)
ON CONFLICT (insight_id) DO UPDATE
SET pending_customer_ids = excluded.pending_customer_ids, last_scheduled = now();

-- name: reserve
-- The first $2 of the candidates (in order) that no concurrent claim holds, each reserved
-- for this transaction, with their events (as read_streams in popflow/events/postgres.sql
-- reads them), candidate by candidate. The function scan yields the array in order and the
-- LIMIT stops it, so no lock is taken beyond those reserved. The events are read by the
-- statement's snapshot, taken before the locks: a stream that a concurrent claim dispatched
-- and committed in between looks ready, and the dispatch appended for it conflicts.
WITH reserved AS MATERIALIZED (
    SELECT stream_id, n FROM unnest($1::text[]) WITH ORDINALITY AS c (stream_id, n)
    WHERE pg_try_advisory_xact_lock($3, hashtext(stream_id))
    LIMIT $2
)
SELECT e.position, e.stream_id, e.version, e.type, e.data::text AS data, e.recorded_at
FROM reserved r
JOIN popflow.events e ON e.stream_id = r.stream_id
ORDER BY r.n, e.version;

-- name: entries
SELECT * FROM popflow.agenda_queue ORDER BY enqueued_position;

-- name: insight_queues
-- Each insight's queue ($1: the insights asked about, or NULL for every insight with
-- something queued), with the round-robin cursor.
WITH counted AS (
    SELECT insight_id, min(resource_pool_id) AS resource_pool_id,
           count(*) FILTER (WHERE status = 'ready') AS ready,
           count(*) FILTER (WHERE status = 'dispatched') AS dispatched,
           count(*) FILTER (WHERE status = 'running') AS running,
           min(ready_since) FILTER (WHERE status = 'ready') AS oldest_ready_since
    FROM popflow.agenda_queue
    WHERE $1::text[] IS NULL OR insight_id = ANY ($1::text[])
    GROUP BY insight_id
),
asked AS (
    SELECT insight_id FROM counted WHERE $1::text[] IS NULL
    UNION
    SELECT unnest($1::text[])
)
SELECT a.insight_id, c.resource_pool_id, coalesce(c.ready, 0) AS ready,
       coalesce(c.dispatched, 0) AS dispatched, coalesce(c.running, 0) AS running,
       c.oldest_ready_since,
       coalesce(extract(epoch FROM now() - c.oldest_ready_since), 0)::float8
           AS oldest_wait_seconds,
       coalesce(s.pending_customer_ids, '{}') AS pending_customers
FROM asked a
LEFT JOIN counted c USING (insight_id)
LEFT JOIN popflow.insight_schedules s USING (insight_id)
ORDER BY a.insight_id;

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
