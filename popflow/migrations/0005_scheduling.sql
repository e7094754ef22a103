-- Scheduling: what the queue ranks agendas by, the round-robin cursor, and the indexes the
-- algorithms of popflow/engine/scheduling.py read through.
--
-- Each queue row now also keeps the agenda's params.priority (following agenda.updated), the
-- time it was enqueued (its submission's recorded_at), the time it last became ready, and how
-- many times it re-entered the queue. queue_apply_event() stays the twin of fold() in
-- popflow/projections/queue.py (the WorkQueue contract tests compare both); it now takes the
-- event's recorded_at. The existing rows are rebuilt from the log at the end.

ALTER TABLE popflow.agenda_queue
    ADD COLUMN priority    int NOT NULL DEFAULT 0,
    ADD COLUMN enqueued_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN ready_since timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN reentries   int NOT NULL DEFAULT 0;

-- RoundRobin: each customer's ready agendas of an insight, oldest first (also lists the
-- customers waiting in an insight, by a skip scan).
CREATE INDEX agenda_queue_ready_customer
    ON popflow.agenda_queue (insight_id, customer_id, enqueued_position) WHERE status = 'ready';
-- Priority: the ready agendas of each priority, oldest first; and the few that re-entered.
CREATE INDEX agenda_queue_ready_priority
    ON popflow.agenda_queue (insight_id, priority, enqueued_position) WHERE status = 'ready';
CREATE INDEX agenda_queue_ready_reentered
    ON popflow.agenda_queue (insight_id, enqueued_position)
    WHERE status = 'ready' AND reentries > 0;
-- queueSize: an insight's agendas dispatched or running.
CREATE INDEX agenda_queue_leased_insight
    ON popflow.agenda_queue (insight_id) WHERE status <> 'ready';

-- The round-robin cursor per insight (pop-spec §1.12 InsightScheduleInfo). Scheduler state,
-- written by claims under the insight's claim lock; not a projection: losing it only starts
-- a new round.
CREATE TABLE popflow.insight_schedules (
    insight_id           text PRIMARY KEY,
    pending_customer_ids text[] NOT NULL DEFAULT '{}',
    last_scheduled       timestamptz NOT NULL DEFAULT now()
);

-- The priority of an agenda's params: a JSON integer from -10 to 10, anything else 0
-- (agenda_priority() in popflow/projections/queue.py).
CREATE FUNCTION popflow.agenda_priority(p_params jsonb) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_params->'priority') = 'number'
         AND (p_params->>'priority') ~ '^-?[0-9]{1,3}$'
         AND (p_params->>'priority')::int BETWEEN -10 AND 10
        THEN (p_params->>'priority')::int
        ELSE 0
    END
$$;

DROP TRIGGER queue_follows_events ON popflow.events;
DROP FUNCTION popflow.queue_follow_events();
DROP FUNCTION popflow.rebuild_queue();
DROP FUNCTION popflow.queue_apply_event(text, bigint, text, jsonb);

CREATE FUNCTION popflow.queue_apply_event(p_stream text, p_position bigint, p_type text,
                                          p_data jsonb, p_time timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_type
    WHEN 'agenda.submitted' THEN
        IF NOT coalesce((p_data->>'held')::boolean, false) THEN
            INSERT INTO popflow.agenda_queue (stream_id, agenda_id, resource_pool_id, insight_id,
                                              customer_id, status, enqueued_position, priority,
                                              enqueued_at, ready_since)
            VALUES (p_stream, p_data->>'agendaId', p_data->'insight'->>'resourcePoolId',
                    p_data->'insight'->>'insightId', p_data->'agenda'->>'customerId', 'ready',
                    p_position, popflow.agenda_priority(p_data->'agenda'->'params'), p_time,
                    p_time);
        END IF;
    WHEN 'agenda.dispatched' THEN
        UPDATE popflow.agenda_queue
        SET status = 'dispatched', dispatch = (p_data->>'dispatch')::int,
            worker_id = p_data->>'workerId'
        WHERE stream_id = p_stream;
    WHEN 'agenda.started' THEN
        UPDATE popflow.agenda_queue SET status = 'running' WHERE stream_id = p_stream;
    WHEN 'agenda.reclaimed' THEN
        UPDATE popflow.agenda_queue
        SET status = 'ready', worker_id = NULL, ready_since = p_time, reentries = reentries + 1
        WHERE stream_id = p_stream;
    WHEN 'agenda.updated' THEN
        -- New params replace the old ones whole, as in the agenda document.
        IF jsonb_typeof(p_data->'changes'->'params') = 'object' THEN
            UPDATE popflow.agenda_queue
            SET priority = popflow.agenda_priority(p_data->'changes'->'params')
            WHERE stream_id = p_stream;
        END IF;
    WHEN 'agenda.succeeded', 'agenda.failed', 'agenda.deleted' THEN
        DELETE FROM popflow.agenda_queue WHERE stream_id = p_stream;
    ELSE
        NULL;  -- operation events leave the queue alone
    END CASE;
END
$$;

CREATE FUNCTION popflow.queue_follow_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT stream_id, position, type, data, recorded_at FROM appended
        WHERE type LIKE 'agenda.%' ORDER BY position
    LOOP
        PERFORM popflow.queue_apply_event(e.stream_id, e.position, e.type, e.data,
                                          e.recorded_at);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_follows_events
AFTER INSERT ON popflow.events
REFERENCING NEW TABLE AS appended
FOR EACH STATEMENT EXECUTE FUNCTION popflow.queue_follow_events();

-- Rebuild the queue from the whole log (popflow projections rebuild).
CREATE FUNCTION popflow.rebuild_queue() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    e record;
    applied bigint := 0;
BEGIN
    LOCK TABLE popflow.agenda_queue IN EXCLUSIVE MODE;
    DELETE FROM popflow.agenda_queue;
    FOR e IN
        SELECT stream_id, position, type, data, recorded_at FROM popflow.events
        WHERE type LIKE 'agenda.%' ORDER BY position
    LOOP
        PERFORM popflow.queue_apply_event(e.stream_id, e.position, e.type, e.data,
                                          e.recorded_at);
        applied := applied + 1;
    END LOOP;
    RETURN applied;
END
$$;

SELECT popflow.rebuild_queue();
