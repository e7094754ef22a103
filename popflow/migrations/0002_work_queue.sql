-- The work queue and the workers that hold leases on it.
--
-- popflow.agenda_queue is an inline projection of the agenda streams: a trigger on
-- popflow.events applies every appended batch to it inside the append's own statement, so
-- the queue can never disagree with the events, and an append stays one round trip with the
-- gap-safety lock held only as long as the statement and its commit. queue_apply_event() is
-- the same fold as popflow/projections/queue.py (which the in-memory store uses); the
-- WorkQueue contract tests run against both. It reads the events' stored JSON, so the fields
-- it reads (agendaId, insight, agenda.customerId, held, dispatch, workerId) must keep their
-- shape, or a migration must teach it the new one.

CREATE TABLE popflow.agenda_queue (
    stream_id         text PRIMARY KEY,
    agenda_id         text NOT NULL UNIQUE,
    resource_pool_id  text NOT NULL,
    insight_id        text NOT NULL,
    customer_id       text NOT NULL,
    status            text NOT NULL CHECK (status IN ('ready', 'dispatched', 'running')),
    enqueued_position bigint NOT NULL,
    dispatch          int NOT NULL DEFAULT 0,
    worker_id         text
);

-- Claims scan ready agendas of some insights in queue order.
CREATE INDEX agenda_queue_ready ON popflow.agenda_queue (insight_id, enqueued_position)
    WHERE status = 'ready';
CREATE INDEX agenda_queue_ready_order ON popflow.agenda_queue (enqueued_position)
    WHERE status = 'ready';
-- The reclaimer looks for leases held by dead workers.
CREATE INDEX agenda_queue_leased ON popflow.agenda_queue (worker_id)
    WHERE status <> 'ready';

-- A lease is valid while its worker's heartbeat is fresh (judged by the database clock).
CREATE TABLE popflow.workers (
    worker_id    text PRIMARY KEY,
    host         text NOT NULL,
    pid          int NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION popflow.queue_apply_event(p_stream text, p_position bigint, p_type text,
                                          p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_type
    WHEN 'agenda.submitted' THEN
        IF NOT coalesce((p_data->>'held')::boolean, false) THEN
            INSERT INTO popflow.agenda_queue (stream_id, agenda_id, resource_pool_id, insight_id,
                                              customer_id, status, enqueued_position)
            VALUES (p_stream, p_data->>'agendaId', p_data->'insight'->>'resourcePoolId',
                    p_data->'insight'->>'insightId', p_data->'agenda'->>'customerId', 'ready',
                    p_position);
        END IF;
    WHEN 'agenda.dispatched' THEN
        UPDATE popflow.agenda_queue
        SET status = 'dispatched', dispatch = (p_data->>'dispatch')::int,
            worker_id = p_data->>'workerId'
        WHERE stream_id = p_stream;
    WHEN 'agenda.started' THEN
        UPDATE popflow.agenda_queue SET status = 'running' WHERE stream_id = p_stream;
    WHEN 'agenda.reclaimed' THEN
        UPDATE popflow.agenda_queue SET status = 'ready', worker_id = NULL
        WHERE stream_id = p_stream;
    WHEN 'agenda.succeeded', 'agenda.failed' THEN
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
        SELECT stream_id, position, type, data FROM appended
        WHERE type LIKE 'agenda.%' ORDER BY position
    LOOP
        PERFORM popflow.queue_apply_event(e.stream_id, e.position, e.type, e.data);
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
        SELECT stream_id, position, type, data FROM popflow.events
        WHERE type LIKE 'agenda.%' ORDER BY position
    LOOP
        PERFORM popflow.queue_apply_event(e.stream_id, e.position, e.type, e.data);
        applied := applied + 1;
    END LOOP;
    RETURN applied;
END
$$;
