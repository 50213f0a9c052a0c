-- The members of a dispatch's snapshot in profile order, each with the destination for the
-- dispatch's channel taken from the profile version its join pinned (never the current profile:
-- that depends on how far the profile-changes topic had got) and the reason it is suppressed
-- (NULL: queued). Equal versions with different content: the highest content_hash, as in the
-- cdp_profiles upsert. Precedence: the dispatch's own suppression (cancelled event, paused or
-- completed campaign), then a join that pinned no version, then a missing destination.
SELECT m.profile_id, m.profile_version, pinned.destination,
       CASE
           WHEN %(suppress_reason)s::text IS NOT NULL THEN %(suppress_reason)s::text
           WHEN m.profile_version IS NULL
               THEN 'membership change does not pin a profile version'
           WHEN pinned.destination IS NULL
               THEN format('profile version %%s has no %%s for channel %%s', m.profile_version,
                           CASE %(channel)s::text
                               WHEN 'email' THEN 'email address'
                               WHEN 'push' THEN 'push token'
                               ELSE 'mobile number' END,
                           %(channel)s::text)
       END AS reason
FROM segment_snapshot_member m
LEFT JOIN LATERAL (
    SELECT nullif(CASE %(channel)s::text
                      WHEN 'email' THEN v.email::text
                      WHEN 'push' THEN v.push_token
                      ELSE v.mobile_number  -- sms, zalo
                  END, '') AS destination
    FROM cdp_profile_version v
    WHERE v.tenant_id = m.tenant_id AND v.profile_id = m.profile_id
      AND v.version = m.profile_version
    ORDER BY v.content_hash DESC
    LIMIT 1
) pinned ON true
WHERE m.tenant_id = (SELECT leo_current_tenant()) AND m.snapshot_id = %(snapshot_id)s
ORDER BY m.profile_id
