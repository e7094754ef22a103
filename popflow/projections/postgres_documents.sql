-- Queries of the document reader on PostgreSQL (popflow/projections/postgres_documents.py).
-- popflow.readable_documents (migration 0004) shows documents and progress alike.
--
-- Listings and counts share one condition, "matching", spliced in where it is named in
-- braces. In it, $1 is the kind; $2 the caller's accounts (NULL: everything is visible);
-- $3 whether shared documents count too (global ones, and those allowed to one of $4, the
-- accounts lower-cased). Its equality filters become "body->>$n = $m AND ..." with the field
-- names and values as bind parameters: nothing a caller sends is spliced into the SQL text.

-- name: get
SELECT kind, id, customer_id, version, body::text AS body
FROM popflow.readable_documents WHERE kind = $1 AND id = $2;

-- name: matching
kind = $1
AND ($2::text[] IS NULL OR customer_id = ANY ($2::text[])
     OR ($3::boolean AND (body->'isGlobal' = 'true'::jsonb
                          OR (jsonb_typeof(body->'allowedCustomerIds') = 'array'
                              AND body->'allowedCustomerIds' ?| $4::text[]))))
AND {equals}

-- name: select
SELECT kind, id, customer_id, version, body::text AS body
FROM popflow.readable_documents
WHERE {matching}
ORDER BY added_time, id COLLATE "C"
LIMIT $5;

-- name: count
SELECT count(*) FROM popflow.readable_documents WHERE {matching};

-- name: owners
SELECT stream_id, customer_id FROM popflow.stream_owners WHERE stream_id = ANY ($1::text[]);

-- name: rebuild
SELECT popflow.rebuild_documents();
