-- Queries of the PostgreSQL event store (popflow/events/postgres.py).

-- name: append_events
SELECT appended, version, positions, recorded_at
FROM popflow.append_events($1, $2, $3, $4, $5, $6, $7);

-- name: read_stream
SELECT position, stream_id, version, type, data::text AS data, recorded_at
FROM popflow.events
WHERE stream_id = $1 AND version > $2 AND version <= $3
ORDER BY version;

-- name: read_streams
SELECT position, stream_id, version, type, data::text AS data, recorded_at
FROM popflow.events
WHERE stream_id = ANY ($1::text[])
ORDER BY stream_id, version;

-- name: read_all
-- Never past the horizon of appends in flight (migration 0006): no gaps.
SELECT position, stream_id, version, type, data, recorded_at
FROM popflow.read_all($1, $2);

-- name: announce
-- A notification after an append committed (migration 0009), in a transaction of its own:
-- asynchronous, since it writes nothing worth waiting for a flush.
SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2);

-- name: stream_version
SELECT coalesce((SELECT version FROM popflow.streams WHERE stream_id = $1), 0);

-- name: head
SELECT popflow.head();
