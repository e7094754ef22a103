-- Appends no longer notify inside their transaction.
--
-- A transaction that has called NOTIFY takes a lock on the notification queue before it
-- commits and holds it until its commit is durable, so that notifications arrive in commit
-- order: every such transaction of the whole server commits one after the other, each
-- waiting for its own WAL flush. With every append notifying popflow_events, appends to
-- different streams could not share a flush, which migration 0006 set out to allow
-- (pgbench, 8 connections, one-event appends: 2,030 per second with the notification,
-- 3,200 without; 100-event appends: 1,170 and 1,340).
--
-- The appender now announces its appends itself once they have committed
-- (popflow/events/postgres.py): its own process's waiters at once, other processes through
-- a notification sent after the commit, in a transaction of its own that commits
-- asynchronously (it writes nothing worth a flush). The notification stays a hint: a
-- reader that misses it (the appender died in between) polls.
--
-- popflow_ready (migration 0008) is still notified by its trigger, inside the transaction:
-- only submissions, reclaims and the endings that free room in a bounded insight send it.

CREATE OR REPLACE FUNCTION popflow.append_events(
    p_streams       text[],
    p_expected      bigint[],
    p_counts        int[],
    p_event_request int[],
    p_event_version bigint[],
    p_types         text[],
    p_data          jsonb[]
) RETURNS TABLE (appended boolean, version bigint, positions bigint[],
                 recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_requests int := coalesce(array_length(p_streams, 1), 0);
    v_done text[];
    v_ok boolean[];
    v_all_ok boolean;
    v_base int[] := array_fill(0, ARRAY[v_requests]);
    v_total int := 0;
    v_positions bigint[];
    v_now timestamptz;
BEGIN
    -- Check and advance every stream's version in one statement, locking the stream rows in
    -- a stable order (so concurrent appenders cannot deadlock). A request whose stream
    -- does not exist yet can only expect version 0; a row that does not match is locked
    -- but left alone, and not returned.
    WITH advanced AS (
        INSERT INTO popflow.streams AS st (stream_id, version)
        SELECT r.s, r.e + r.c FROM unnest(p_streams, p_expected, p_counts) AS r(s, e, c)
        WHERE r.e = 0 OR EXISTS (SELECT FROM popflow.streams x WHERE x.stream_id = r.s)
        ORDER BY r.s
        ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version
        WHERE st.version
              = excluded.version - p_counts[array_position(p_streams, st.stream_id)]
        RETURNING st.stream_id
    )
    SELECT array_agg(stream_id) INTO v_done FROM advanced;

    SELECT array_agg(r.s = ANY (coalesce(v_done, '{}')) ORDER BY r.n) INTO v_ok
    FROM unnest(p_streams) WITH ORDINALITY AS r(s, n);
    v_all_ok := coalesce(array_length(v_done, 1), 0) = v_requests;
    FOR i IN 1 .. v_requests LOOP
        IF v_ok[i] THEN
            v_base[i] := v_total;
            v_total := v_total + p_counts[i];
        END IF;
    END LOOP;

    IF v_total > 0 THEN
        -- The mark first, then the positions (see migration 0006). nextval() runs row
        -- by row in the order of the events, so each request's positions increase with its
        -- versions.
        PERFORM pg_advisory_xact_lock_shared(popflow.position_marker(popflow.last_position()));
        v_now := clock_timestamp();
        WITH inserted AS (
            INSERT INTO popflow.events (position, stream_id, version, type, data, recorded_at)
            SELECT nextval('popflow.event_position'), p_streams[e.req], e.version, e.type,
                   e.data, v_now
            FROM unnest(p_event_request, p_event_version, p_types, p_data)
                 AS e(req, version, type, data)
            WHERE v_all_ok OR v_ok[e.req]
            RETURNING position
        )
        SELECT array_agg(position ORDER BY position) INTO v_positions FROM inserted;
    END IF;

    RETURN QUERY
    SELECT v_ok[r.n],
           CASE WHEN v_ok[r.n] THEN r.e + r.c ELSE coalesce(st.version, 0) END,
           CASE WHEN v_ok[r.n] AND r.c > 0
                THEN v_positions[v_base[r.n] + 1 : v_base[r.n] + r.c] END,
           v_now
    FROM unnest(p_streams, p_expected, p_counts) WITH ORDINALITY AS r(s, e, c, n)
    LEFT JOIN popflow.streams st ON NOT v_ok[r.n] AND st.stream_id = r.s
    ORDER BY r.n;
END
$$;
