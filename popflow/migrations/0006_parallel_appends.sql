-- Appends that commit in parallel, and readers that never see a gap.
--
-- Until now append_events() held one advisory lock from assigning positions to commit, so
-- positions became visible in order, but appends were serialised: each commit waited for
-- its own WAL flush and concurrent appends could never share one. Now appends hold no
-- common lock and commit side by side; the order guarantee moves to the readers.
--
-- The invariant (DESIGN.md, 3): a reader that has seen position N never later misses an
-- event below N. The mechanism:
--
-- * An appender announces itself before it takes positions: it reads the position
--   sequence's last value V and takes a *shared* transaction-level advisory lock on the
--   key MARKER + V + 1 (popflow.position_marker), held to its commit or rollback; then it
--   takes its positions from the sequence, all of them > V. Shared, so appenders never
--   wait for each other here; the lock is only a mark that any session can see in pg_locks.
-- * A reader (popflow.read_horizon, then a fresh snapshot) first reads the sequence's last
--   value S, then the smallest mark M held by another session of this database, and
--   returns only positions <= S and < M, read with a snapshot taken after both.
--
-- Why no gap: take an event at position p, not visible to the reader's snapshot, below a
-- position the reader returns (so p <= S). p was handed out before the reader read S, so
-- its appender took its mark before that, and the appender had not ended when the
-- snapshot was taken (else p would be visible, or rolled back and gone for good), so its
-- mark was still held when the reader read pg_locks afterwards: M <= mark <= p, and the
-- reader returns nothing at or above p. Positions may still have holes (rolled back
-- appends), never late arrivals below what a reader has seen.
--
-- Requirements this relies on: the sequence hands out increasing numbers without a
-- per-session cache (CACHE 1, the default; never change it), and readers run in READ
-- COMMITTED, where each statement of a function takes a new snapshot.
--
-- Streams serialise as before: an append locks the row of each stream it writes (in
-- stream order) and checks its version in the same INSERT … ON CONFLICT statement, so two
-- appends to one stream still commit one after the other, in version order.

DROP FUNCTION popflow.append_events(text[], bigint[], int[], int[], int[], text[], jsonb[], bigint);

-- The advisory lock key of an appender that may take positions from after + 1 on: the
-- position in the low 48 bits (2^48 positions: 89 years at 100,000 events/s), a popflow
-- tag ('pp') in the high 16, so that other advisory locks are not taken for marks.
CREATE FUNCTION popflow.position_marker(p_after bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT (x'7070'::bigint << 48) | (p_after + 1) $$;

-- The last position handed out (0 before the first).
CREATE FUNCTION popflow.last_position() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM popflow.event_position
$$;

-- Append a batch of requests, at most one per stream, in one statement.
-- Request i appends p_counts[i] events to p_streams[i] if that stream is still at
-- p_expected[i]. The events of all requests are flattened into p_types/p_data, request by
-- request; p_event_request[k] and p_event_version[k] say which request event k belongs to and
-- the version it gets in its stream. Returns one row per request: whether it was appended,
-- the stream's version afterwards (its actual version on a conflict), the positions of its
-- events (increasing, not necessarily consecutive) and the time they were recorded.
CREATE FUNCTION popflow.append_events(
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
        -- The mark first, then the positions (see the top of this file). nextval() runs row
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

        PERFORM pg_notify('popflow_events', v_positions[v_total]::text);
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

-- The exclusive upper bound of the positions a reader may return now: nothing at or above
-- it may be read, because an append that may still commit below it is in flight. Call it
-- before taking the snapshot that reads the events (a separate statement, READ COMMITTED).
CREATE FUNCTION popflow.read_horizon() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_last bigint := popflow.last_position();
    v_mark bigint;
BEGIN
    SELECT min(((l.classid::bigint << 32) | l.objid::bigint) & x'ffffffffffff'::bigint)
    INTO v_mark
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.classid::bigint >> 16 = x'7070'::bigint
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid IS DISTINCT FROM pg_backend_pid();  -- a prepared transaction has none
    RETURN least(v_last + 1, v_mark);
END
$$;

-- The events after position p_after, in order, up to p_limit of them, never past the horizon.
CREATE FUNCTION popflow.read_all(p_after bigint, p_limit int)
RETURNS TABLE ("position" bigint, stream_id text, version bigint, type text, data text,
               recorded_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_horizon bigint := popflow.read_horizon();
BEGIN
    RETURN QUERY  -- a new statement: its snapshot is taken after the horizon
    SELECT e.position, e.stream_id, e.version, e.type, e.data::text, e.recorded_at
    FROM popflow.events e
    WHERE e.position > p_after AND e.position < v_horizon
    ORDER BY e.position
    LIMIT p_limit;
END
$$;

-- The highest position a reader may have seen (0 for none), under the same horizon.
CREATE FUNCTION popflow.head() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_horizon bigint := popflow.read_horizon();
BEGIN
    RETURN coalesce((SELECT max(e.position) FROM popflow.events e
                     WHERE e.position < v_horizon), 0);
END
$$;
