-- Queries of the PostgreSQL statistics (popflow/projections/postgres_statistics.py): the
-- same rules as state_of() in popflow/projections/statistics.py.

-- name: agendas_by_state
-- The queue (inline with the events) names the state of queued agendas; the progress row
-- the outcome of completed ones. Only agendas that are in neither case (held, deleted
-- before running, or just ended ahead of the progress projection) look at their events,
-- through the (stream_id, version) index.
SELECT state, count(*) AS agendas
FROM (
    SELECT CASE
        WHEN q.status IS NOT NULL THEN q.status
        WHEN p.processing_state = 'COMPLETE' THEN
            CASE p.doc->>'processingStateMessage' WHEN 'failed' THEN 'failed' ELSE 'succeeded' END
        ELSE coalesce(
            (SELECT CASE e.type WHEN 'agenda.succeeded' THEN 'succeeded'
                                WHEN 'agenda.failed' THEN 'failed'
                                ELSE 'deleted' END
             FROM popflow.events e
             WHERE e.stream_id = p.stream_id
               AND e.type IN ('agenda.succeeded', 'agenda.failed', 'agenda.deleted')
             ORDER BY e.version DESC
             LIMIT 1),
            'held')
    END AS state
    FROM popflow.agenda_progress p
    FULL JOIN popflow.agenda_queue q ON q.stream_id = p.stream_id
) AS agendas
GROUP BY state;

-- name: queue_depth
SELECT insight_id, status, count(*) AS agendas
FROM popflow.agenda_queue
GROUP BY insight_id, status;
