-- The content hashes already recorded for the (profile, version) pairs of a batch of upserts: a
-- version the CDP reuses with other content is refused, an exact repeat is a duplicate.
SELECT v.profile_id::text, v.version, v.content_hash
FROM cdp_profile_version v
JOIN unnest(%(profiles)s::uuid[], %(versions)s::bigint[]) AS b(profile_id, version)
  ON v.profile_id = b.profile_id AND v.version = b.version
WHERE v.tenant_id = %(tenant_id)s
