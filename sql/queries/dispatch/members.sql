-- The members of a dispatch's snapshot in profile order, each with the destination for the
-- dispatch's channel (in plaintext from a v1-v3 upsert, or sealed, with its key's id, from a
-- v4 one: copied sealed, opened only when the request is produced) taken from the profile
-- version its join pinned (never the current profile:
-- that depends on how far the profile-changes topic had got) and the reason it is suppressed
-- (NULL: queued). Equal versions with different content: the highest content_hash, as in the
-- cdp_profiles upsert. Precedence: the dispatch's own suppression (cancelled event, paused or
-- completed campaign), then a join that pinned no version, then a missing destination, then a
-- missing consent where the channel's policy requires one (the pinned version's consent), then
-- the frequency cap: the member's deliveries on the channel queued by dispatches before this one
-- in command order, within the cap's window of business time on either side (another delivery of
-- the same event is the same delivery, not one more).
SELECT m.profile_id, m.profile_version, pinned.destination, pinned.destination_sealed, pinned.key_id,
       CASE
           WHEN %(suppress_reason)s::text IS NOT NULL THEN %(suppress_reason)s::text
           WHEN m.profile_version IS NULL
               THEN 'membership change does not pin a profile version'
           WHEN pinned.destination IS NULL AND pinned.destination_sealed IS NULL
               THEN format('profile version %%s has no %%s for channel %%s', m.profile_version,
                           CASE %(channel)s::text
                               WHEN 'email' THEN 'email address'
                               WHEN 'push' THEN 'push token'
                               ELSE 'mobile number' END,
                           %(channel)s::text)
           WHEN %(consent_required)s AND pinned.consent IS DISTINCT FROM 'granted'
               THEN format('no_consent: profile version %%s has %%s consent for %%s',
                           m.profile_version, coalesce(pinned.consent, 'no'), %(channel)s::text)
           WHEN %(cap_max)s::integer IS NOT NULL AND (
               SELECT count(DISTINCT l.delivery_id)
               FROM delivery_log l
               JOIN dispatch earlier
                 ON earlier.tenant_id = %(tenant_id)s AND earlier.dispatch_id = l.dispatch_id
               WHERE l.tenant_id = %(tenant_id)s AND l.profile_id = m.profile_id
                 AND l.delivery_status = 'queued' AND l.channel = %(channel)s::text
                 AND l.event_id <> %(event_id)s::uuid
                 AND earlier.dispatch_seq < %(dispatch_seq)s::bigint
                 AND earlier.requested_at > %(requested_at)s::timestamptz - %(cap_window)s::interval
                 AND earlier.requested_at < %(requested_at)s::timestamptz + %(cap_window)s::interval
           ) >= %(cap_max)s::integer
               THEN format('frequency_cap: %%s %%s deliveries within %%s already queued',
                           %(cap_max)s::integer, %(channel)s::text, %(cap_window)s::interval)
       END AS reason
FROM segment_snapshot_member m
LEFT JOIN LATERAL (
    SELECT nullif(CASE %(channel)s::text
                      WHEN 'email' THEN v.email::text
                      WHEN 'push' THEN v.push_token
                      ELSE v.mobile_number  -- sms, zalo
                  END, '') AS destination,
           CASE %(channel)s::text
               WHEN 'email' THEN v.email_sealed
               WHEN 'push' THEN v.push_token_sealed
               ELSE v.mobile_number_sealed
           END AS destination_sealed,
           v.key_id,
           v.consents -> %(channel)s::text ->> 'state' AS consent
    FROM cdp_profile_version v
    WHERE v.tenant_id = %(tenant_id)s AND v.profile_id = m.profile_id
      AND v.version = m.profile_version
    ORDER BY v.content_hash DESC
    LIMIT 1
) pinned ON true
WHERE m.tenant_id = %(tenant_id)s AND m.snapshot_id = %(snapshot_id)s
ORDER BY m.profile_id
