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

-- name: routing
-- part 0: the customer $1; 1: a marker, present when it does not exist but others do;
-- 2: the insights of its resource pool, oldest first; 3: the pool.
WITH customer AS (
    SELECT kind, id, customer_id, version, body
    FROM popflow.documents WHERE kind = 'customer' AND id = $1
), pool AS (
    SELECT body->>'resourcePoolId' AS id FROM customer WHERE body->>'resourcePoolId' <> ''
)
SELECT 0 AS part, 0::bigint AS rank, kind, id, customer_id, version, body::text AS body
FROM customer
UNION ALL
SELECT 1, 0, 'customer', '', '', 0, NULL
WHERE NOT EXISTS (SELECT FROM customer)
  AND EXISTS (SELECT FROM popflow.documents WHERE kind = 'customer')
UNION ALL
SELECT 2, row_number() OVER (ORDER BY d.added_time, d.id COLLATE "C"),
       d.kind, d.id, d.customer_id, d.version, d.body::text
FROM popflow.documents d JOIN pool ON d.body->>'resourcePoolId' = pool.id
WHERE d.kind = 'insight'
UNION ALL
SELECT 3, 0, d.kind, d.id, d.customer_id, d.version, d.body::text
FROM popflow.documents d JOIN pool ON d.id = pool.id
WHERE d.kind = 'resourcepool'
ORDER BY part, rank;
