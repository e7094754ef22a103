-- Queries of the progress projection on PostgreSQL (popflow/projections/postgres.py).

-- name: ensure_checkpoint
INSERT INTO popflow.projection_checkpoints (projection, position) VALUES ($1, 0)
ON CONFLICT DO NOTHING;

-- name: lock_checkpoint
SELECT position FROM popflow.projection_checkpoints WHERE projection = $1 FOR UPDATE;

-- name: checkpoint
SELECT coalesce((SELECT position FROM popflow.projection_checkpoints WHERE projection = $1), 0);

-- name: set_checkpoint
UPDATE popflow.projection_checkpoints SET position = $2, updated_at = clock_timestamp()
WHERE projection = $1;

-- name: load_agendas
SELECT stream_id, doc::text AS doc FROM popflow.agenda_progress WHERE stream_id = ANY ($1::text[]);

-- name: load_operations
SELECT agenda_progress_id, doc::text AS doc FROM popflow.operation_progress
WHERE agenda_progress_id = ANY ($1::text[])
ORDER BY agenda_progress_id, position;

-- name: upsert_agendas
INSERT INTO popflow.agenda_progress AS p (id, agenda_id, stream_id, customer_id, link_id, cid,
                                          processing_state, updated_time, doc)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::jsonb[])
ON CONFLICT (id) DO UPDATE
SET processing_state = excluded.processing_state, updated_time = excluded.updated_time,
    link_id = excluded.link_id, doc = excluded.doc;

-- name: upsert_operations
INSERT INTO popflow.operation_progress AS o (id, agenda_progress_id, position, operation,
                                             customer_id, processing_state, updated_time, doc)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                     $7::bigint[], $8::jsonb[])
ON CONFLICT (id) DO UPDATE
SET processing_state = excluded.processing_state, updated_time = excluded.updated_time,
    doc = excluded.doc;

-- name: truncate
TRUNCATE popflow.agenda_progress, popflow.operation_progress;

-- name: agenda_by_id
SELECT doc::text AS doc FROM popflow.agenda_progress WHERE agenda_id = $1 OR id = $1 LIMIT 1;

-- name: agendas_by_link
SELECT doc::text AS doc FROM popflow.agenda_progress WHERE link_id = $1 ORDER BY doc->>'addedTime', id;

-- name: operations_of
SELECT agenda_progress_id, doc::text AS doc FROM popflow.operation_progress
WHERE agenda_progress_id = ANY ($1::text[])
ORDER BY agenda_progress_id, position;

-- name: operation_by_id
SELECT doc::text AS doc FROM popflow.operation_progress WHERE id = $1;
