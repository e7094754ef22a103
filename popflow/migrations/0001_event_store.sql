-- The event store: one row per stream (its version) and one row per event.
--
-- Gap-safe global order: append_events() takes a transaction-level advisory lock right
-- before it assigns positions, and holds it until commit. Positions are therefore assigned
-- and made visible in the same order, so a reader that has seen position N never later
-- finds an event below N. Positions may have holes (a rolled back transaction consumes
-- numbers), never reorderings.

CREATE TABLE popflow.streams (
    stream_id text PRIMARY KEY,
    version   bigint NOT NULL CHECK (version >= 0)
);

CREATE SEQUENCE popflow.event_position AS bigint;

CREATE TABLE popflow.events (
    position    bigint PRIMARY KEY,
    stream_id   text NOT NULL,
    version     bigint NOT NULL CHECK (version > 0),
    type        text NOT NULL,
    data        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version)
);

-- Append a batch of requests, at most one per stream, in one statement.
-- Request i appends p_counts[i] events to p_streams[i] if that stream is still at
-- p_expected[i]. The events of all requests are flattened into p_types/p_data, request by
-- request; p_event_request[k] and p_event_offset[k] say which request event k belongs to and
-- its 1-based place in it. Returns one row per request: whether it was appended, the
-- stream's version afterwards (its actual version on a conflict), the position of its
-- first event and the time its events were recorded.
CREATE FUNCTION popflow.append_events(
    p_streams       text[],
    p_expected      bigint[],
    p_counts        int[],
    p_event_request int[],
    p_event_offset  int[],
    p_types         text[],
    p_data          jsonb[],
    p_lock_key      bigint
) RETURNS TABLE (appended boolean, version bigint, first_position bigint,
                 recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_requests int := coalesce(array_length(p_streams, 1), 0);
    v_current bigint[];
    v_base bigint[] := array_fill(0::bigint, ARRAY[v_requests]);
    v_ok boolean[] := array_fill(false, ARRAY[v_requests]);
    v_total bigint := 0;
    v_first bigint;
    v_now timestamptz;
BEGIN
    -- Rows for new streams, created in a stable order so concurrent creators cannot deadlock.
    INSERT INTO popflow.streams (stream_id, version)
    SELECT s, 0 FROM unnest(p_streams, p_expected) AS r(s, e) WHERE e = 0 ORDER BY s
    ON CONFLICT DO NOTHING;

    -- Lock every stream row of the batch (in a stable order) and read its version.
    PERFORM 1 FROM popflow.streams st
    WHERE st.stream_id = ANY (p_streams) ORDER BY st.stream_id FOR UPDATE;
    SELECT array_agg(coalesce(st.version, 0) ORDER BY r.n) INTO v_current
    FROM unnest(p_streams) WITH ORDINALITY AS r(s, n)
    LEFT JOIN popflow.streams st ON st.stream_id = r.s;

    FOR i IN 1 .. v_requests LOOP
        IF v_current[i] = p_expected[i] THEN
            v_ok[i] := true;
            v_base[i] := v_total;
            v_total := v_total + p_counts[i];
        END IF;
    END LOOP;

    IF v_total > 0 THEN
        -- The gap-safety lock: held from here to commit, so positions commit in order.
        PERFORM pg_advisory_xact_lock(p_lock_key);
        v_first := nextval('popflow.event_position');
        IF v_total > 1 THEN
            PERFORM setval('popflow.event_position', v_first + v_total - 1);
        END IF;
        v_now := clock_timestamp();

        INSERT INTO popflow.events (position, stream_id, version, type, data, recorded_at)
        SELECT v_first + v_base[e.req] + e.off - 1, p_streams[e.req],
               p_expected[e.req] + e.off, e.type, e.data, v_now
        FROM unnest(p_event_request, p_event_offset, p_types, p_data) AS e(req, off, type, data)
        WHERE v_ok[e.req];

        UPDATE popflow.streams st SET version = r.e + r.c
        FROM unnest(p_streams, p_expected, p_counts, v_ok) AS r(s, e, c, ok)
        WHERE st.stream_id = r.s AND r.ok AND r.c > 0;

        PERFORM pg_notify('popflow_events', (v_first + v_total - 1)::text);
    END IF;

    RETURN QUERY
    SELECT v_ok[i],
           CASE WHEN v_ok[i] THEN p_expected[i] + p_counts[i] ELSE v_current[i] END,
           CASE WHEN v_ok[i] AND p_counts[i] > 0 THEN v_first + v_base[i] END,
           v_now
    FROM generate_series(1, v_requests) AS i;
END
$$;
