-- The document projection, and the work queue learns about agenda.deleted.
--
-- popflow.documents holds the POP JSON of every agenda and configuration object (customer,
-- resource pool, insight, agenda template), one row per (kind, id); popflow.stream_owners
-- remembers the customer owning each stream, deleted ones included. Like the work queue
-- (migration 0002), both are an inline projection: a trigger on popflow.events applies
-- every appended batch inside the append's own statement, so an object is readable the
-- moment its creation is acknowledged. documents_apply_event() is the same fold as
-- fold_document in popflow/projections/documents.py (the memory store's); the document
-- contract tests check that both give the same rows. It reads the events' stored JSON,
-- bypassing upcasters: a change to the fields it reads (object.*: kind, objectId,
-- customerId, document, changes, time; agenda.submitted: agenda, progressId, insight;
-- operations.generated: operations, params; agenda.updated: changes, time) ships with a
-- migration that teaches it the new shape. (Mind that -> and || bind equally tightly and
-- associate to the left: a || b->'k' is (a || b)->'k'.)

CREATE TABLE popflow.documents (
    kind        text NOT NULL,
    id          text NOT NULL,
    customer_id text NOT NULL,
    version     bigint NOT NULL,
    added_time  bigint NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (kind, id)
);

-- Listings come oldest first; ids compare byte-wise (COLLATE "C"), as in Python.
CREATE INDEX documents_in_order ON popflow.documents (kind, added_time, id COLLATE "C");
CREATE INDEX documents_customer ON popflow.documents (kind, customer_id, added_time);
-- The fields POP clients filter on. Hash indexes, because they serve equality only and,
-- unlike a btree, take values of any length (a long title must not fail an append).
CREATE INDEX documents_link ON popflow.documents USING hash ((body->>'linkId'));
CREATE INDEX documents_cid ON popflow.documents USING hash ((body->>'cid'));
CREATE INDEX documents_resource_pool ON popflow.documents USING hash ((body->>'resourcePoolId'));
CREATE INDEX documents_title ON popflow.documents USING hash ((body->>'title'));

CREATE TABLE popflow.stream_owners (
    stream_id   text PRIMARY KEY,
    customer_id text NOT NULL
);

-- Everything the document reader serves, in one shape: the documents, and AgendaProgress
-- and OperationProgress (maintained by the progress projection, migration 0003), which
-- carry version 0 because that projection does not track stream versions. A query names
-- one kind, so the planner keeps only that branch.
CREATE VIEW popflow.readable_documents AS
SELECT kind, id, customer_id, version, added_time, body FROM popflow.documents
UNION ALL
SELECT 'progress/agenda'::text, id, customer_id, 0::bigint, (doc->>'addedTime')::bigint, doc
FROM popflow.agenda_progress
UNION ALL
SELECT 'progress/operation'::text, id, customer_id, 0::bigint, (doc->>'addedTime')::bigint, doc
FROM popflow.operation_progress;

-- The event types that change documents (DOCUMENT_EVENT_TYPES in documents.py).
CREATE FUNCTION popflow.changes_documents(p_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_type IN ('object.created', 'object.updated', 'object.deleted', 'agenda.submitted',
                      'operations.generated', 'agenda.updated', 'agenda.deleted')
$$;

-- The keys of a sparse merge's changes that carry a value (null means "keep what is stored"),
-- among p_allowed when it is given.
CREATE FUNCTION popflow.present_changes(p_changes jsonb, p_allowed text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
    FROM jsonb_each(p_changes)
    WHERE value <> 'null'::jsonb AND (p_allowed IS NULL OR key = ANY (p_allowed))
$$;

CREATE FUNCTION popflow.documents_apply_event(p_stream text, p_version bigint, p_type text,
                                              p_data jsonb, p_recorded_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- Object events name their document; agenda events belong to their stream's agenda.
    v_kind text := CASE WHEN p_type LIKE 'object.%' THEN p_data->>'kind' ELSE 'agenda' END;
    v_id text := CASE WHEN p_type LIKE 'object.%' THEN p_data->>'objectId'
                      WHEN starts_with(p_stream, 'agenda-') THEN substr(p_stream, 8)
                      ELSE p_stream END;
    -- Whole milliseconds, rounded down, exactly as epoch_ms() in progress.py.
    v_now bigint := extract(epoch FROM date_trunc('milliseconds', p_recorded_at)) * 1000;
    v_doc popflow.documents;
    v_body jsonb;
BEGIN
    IF p_type IN ('object.deleted', 'agenda.deleted') THEN
        DELETE FROM popflow.documents WHERE kind = v_kind AND id = v_id;
        RETURN;
    END IF;
    SELECT * INTO v_doc FROM popflow.documents WHERE kind = v_kind AND id = v_id;
    CASE p_type
    WHEN 'object.created' THEN
        v_body := p_data->'document' || jsonb_build_object(
            'id', v_id, 'customerId', p_data->'customerId',
            'addedTime', p_data->'time', 'updatedTime', p_data->'time');
    WHEN 'agenda.submitted' THEN
        v_body := p_data->'agenda' || jsonb_build_object(
            'id', v_id, 'progressId', p_data->'progressId', 'agendaInsight', p_data->'insight',
            'addedTime', v_now, 'updatedTime', v_now);
    WHEN 'object.updated' THEN
        -- id and addedTime identify and order the document: no update moves them.
        v_body := v_doc.body || popflow.present_changes(p_data->'changes')
            || jsonb_build_object('id', v_id, 'addedTime', v_doc.body->'addedTime',
                                  'updatedTime', p_data->'time');
    WHEN 'operations.generated' THEN
        v_body := v_doc.body || jsonb_build_object(
            'operations', coalesce(v_doc.body->'operations', '[]') || (p_data->'operations'),
            'updatedTime', v_now);
        IF jsonb_typeof(p_data->'params') = 'object' AND p_data->'params' <> '{}' THEN
            v_body := v_body || jsonb_build_object(
                'params', coalesce(v_doc.body->'params', '{}') || (p_data->'params'));
        END IF;
    WHEN 'agenda.updated' THEN
        v_body := v_doc.body
            || popflow.present_changes(p_data->'changes', '{title,linkId,jobId,params}')
            || jsonb_build_object('updatedTime', p_data->'time');
    ELSE
        RETURN;  -- other agenda events leave the document as it is
    END CASE;
    IF v_body IS NULL THEN
        RETURN;  -- a change to a document that does not exist (any more)
    END IF;
    PERFORM popflow.documents_put(v_kind, v_id, p_stream, p_version, v_body, v_doc.customer_id);
END
$$;

-- Store a document's new body at p_version and remember its stream's owner. The owner
-- follows customerId while it is a string (it is the visibility key), else stays.
CREATE FUNCTION popflow.documents_put(p_kind text, p_id text, p_stream text, p_version bigint,
                                      p_body jsonb, p_previous_owner text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_owner text := CASE WHEN jsonb_typeof(p_body->'customerId') = 'string'
                         THEN p_body->>'customerId' ELSE p_previous_owner END;
BEGIN
    INSERT INTO popflow.documents AS d (kind, id, customer_id, version, added_time, body)
    VALUES (p_kind, p_id, v_owner, p_version, (p_body->>'addedTime')::bigint, p_body)
    ON CONFLICT (kind, id) DO UPDATE
    SET customer_id = excluded.customer_id, version = excluded.version,
        added_time = excluded.added_time, body = excluded.body;
    INSERT INTO popflow.stream_owners (stream_id, customer_id) VALUES (p_stream, v_owner)
    ON CONFLICT (stream_id) DO UPDATE SET customer_id = excluded.customer_id;
END
$$;

CREATE FUNCTION popflow.documents_follow_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT stream_id, version, type, data, recorded_at FROM appended
        WHERE popflow.changes_documents(type) ORDER BY position
    LOOP
        PERFORM popflow.documents_apply_event(e.stream_id, e.version, e.type, e.data,
                                              e.recorded_at);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER documents_follow_events
AFTER INSERT ON popflow.events
REFERENCING NEW TABLE AS appended
FOR EACH STATEMENT EXECUTE FUNCTION popflow.documents_follow_events();

-- Rebuild the documents and the owners from the whole log; returns the number of events
-- applied. The lock holds appends (their trigger) back until the rebuild commits.
CREATE FUNCTION popflow.rebuild_documents() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    e record;
    applied bigint := 0;
BEGIN
    LOCK TABLE popflow.documents, popflow.stream_owners IN EXCLUSIVE MODE;
    DELETE FROM popflow.documents;
    DELETE FROM popflow.stream_owners;
    FOR e IN
        SELECT stream_id, version, type, data, recorded_at FROM popflow.events
        WHERE popflow.changes_documents(type) ORDER BY position
    LOOP
        PERFORM popflow.documents_apply_event(e.stream_id, e.version, e.type, e.data,
                                              e.recorded_at);
        applied := applied + 1;
    END LOOP;
    RETURN applied;
END
$$;

-- The work queue (migration 0002) drops a deleted agenda, as it drops a completed one
-- (popflow/projections/queue.py does the same in memory). Otherwise unchanged; its
-- trigger already selects every agenda.% event.
CREATE OR REPLACE FUNCTION popflow.queue_apply_event(p_stream text, p_position bigint,
                                                     p_type text, p_data jsonb) RETURNS void
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
    WHEN 'agenda.succeeded', 'agenda.failed', 'agenda.deleted' THEN
        DELETE FROM popflow.agenda_queue WHERE stream_id = p_stream;
    ELSE
        NULL;  -- operation events and agenda.updated leave the queue alone
    END CASE;
END
$$;
