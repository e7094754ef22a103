-- Wake-ups for claimers: a notification on the popflow_ready channel when an append may have
-- given workers something to claim, instead of waking them on every append.
--
-- Every append notifies popflow_events, and a worker that waited on that channel woke for the
-- events of its own claims and executions (and of every other worker's): each wake-up cost a
-- claim transaction that found nothing, and the pause that bounded such claims delayed the
-- next real submission. A statement now also notifies popflow_ready (payload: its last
-- position) when
--
-- * after it, an agenda it touched is ready: it entered or re-entered the line
--   (agenda.submitted, agenda.reclaimed);
-- * or it took an agenda out of the queue (agenda.succeeded, .failed, .deleted) whose insight
--   has a queueSize and ready agendas: the insight may have room for one of them again.
--   (Agendas leaving an unbounded insight give no one room.)
--
-- The trigger is named to run after queue_follows_events (statement triggers fire in name
-- order), so it reads the queue as the statement left it. MemoryWorkQueue follows the same
-- rule, except that it does not read queueSize (popflow/engine/memory_queue.py). Wake-ups
-- stay hints: workers still poll, so a lost or spurious notification costs time, not
-- correctness.

CREATE FUNCTION popflow.ready_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM appended a
               JOIN popflow.agenda_queue q ON q.stream_id = a.stream_id
               WHERE a.type LIKE 'agenda.%' AND q.status = 'ready')
       OR EXISTS (SELECT 1 FROM appended a
                  JOIN popflow.events submission
                    ON submission.stream_id = a.stream_id AND submission.version = 1
                  JOIN popflow.documents d
                    ON d.kind = 'insight'
                   AND d.id = submission.data->'insight'->>'insightId'
                  WHERE a.type IN ('agenda.succeeded', 'agenda.failed', 'agenda.deleted')
                    AND jsonb_typeof(d.body->'queueSize') = 'number'
                    AND (d.body->>'queueSize')::numeric > 0
                    AND EXISTS (SELECT 1 FROM popflow.agenda_queue q
                                WHERE q.insight_id = d.id AND q.status = 'ready'))
    THEN
        PERFORM pg_notify('popflow_ready', (SELECT max(position) FROM appended)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ready_notifies_claimers
AFTER INSERT ON popflow.events
REFERENCING NEW TABLE AS appended
FOR EACH STATEMENT EXECUTE FUNCTION popflow.ready_notify();
