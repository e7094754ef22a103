-- Queries of the PostgreSQL event store (popflow/events/postgres.py).

-- name: append_events
SELECT appended, version, first_position, recorded_at
FROM popflow.append_events($1, $2, $3, $4, $5, $6, $7, $8);

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
SELECT position, stream_id, version, type, data::text AS data, recorded_at
FROM popflow.events
WHERE position > $1
ORDER BY position
LIMIT $2;

-- name: stream_version
SELECT coalesce((SELECT version FROM popflow.streams WHERE stream_id = $1), 0);

-- name: head
SELECT coalesce(max(position), 0) FROM popflow.events;
