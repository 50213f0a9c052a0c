-- What a command's references resolve to in the current tenant; NULL where not asked for or not
-- found. Row-level security hides every other tenant's rows, so naming another tenant's object
-- resolves to nothing, like naming one that does not exist.
SELECT
    (SELECT status FROM campaign
     WHERE tenant_id = %(tenant_id)s AND campaign_id = %(campaign_id)s) AS campaign_status,
    (SELECT status FROM marketing_event
     WHERE tenant_id = %(tenant_id)s AND event_id = %(event_id)s) AS event_status,
    (SELECT state FROM segment_snapshot_request
     WHERE tenant_id = %(tenant_id)s AND snapshot_id = %(snapshot_id)s) AS snapshot_state,
    EXISTS (SELECT FROM agent_task
            WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s) AS task_exists,
    (SELECT event_id FROM agent_task
     WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s) AS task_event_id,
    (SELECT snapshot_id FROM agent_task
     WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s) AS task_snapshot_id
