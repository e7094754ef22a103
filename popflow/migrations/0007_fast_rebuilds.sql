-- A faster work-queue rebuild (popflow projections rebuild). The queue holds agendas that
-- have not ended: agenda.succeeded, agenda.failed and agenda.deleted delete an agenda's
-- row, and nothing after them brings it back (only agenda.submitted, a stream's first
-- event, inserts one; every other event updates the row if there is one). The events of an
-- ended agenda therefore leave no trace in the queue, and the rebuild replays only the
-- agenda events of the streams that have not ended, through the same queue_apply_event as
-- the trigger. Returns the number of events replayed.
CREATE OR REPLACE FUNCTION popflow.rebuild_queue() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    e record;
    applied bigint := 0;
BEGIN
    LOCK TABLE popflow.agenda_queue IN EXCLUSIVE MODE;
    DELETE FROM popflow.agenda_queue;
    FOR e IN
        SELECT a.stream_id, a.position, a.type, a.data, a.recorded_at FROM popflow.events a
        WHERE a.type LIKE 'agenda.%'
          AND NOT EXISTS (SELECT 1 FROM popflow.events ended
                          WHERE ended.stream_id = a.stream_id
                            AND ended.type IN ('agenda.succeeded', 'agenda.failed',
                                               'agenda.deleted'))
        ORDER BY a.position
    LOOP
        PERFORM popflow.queue_apply_event(e.stream_id, e.position, e.type, e.data,
                                          e.recorded_at);
        applied := applied + 1;
    END LOOP;
    RETURN applied;
END
$$;
