-- Current delivery status by channel: how many deliveries sit in each status right now (status
-- precedence, not arrival order, decides; see delivery_status_current), per channel.
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: channel, current_status, deliveries, share_of_channel
SELECT
    coalesce(s.channel, 'unknown')                     AS channel,
    s.current_status,
    count(*)                                           AS deliveries,
    round(count(*)::numeric / sum(count(*)) OVER (PARTITION BY coalesce(s.channel, 'unknown')), 3)
                                                       AS share_of_channel
FROM delivery_status_current s
GROUP BY coalesce(s.channel, 'unknown'), s.current_status
ORDER BY channel, min(leo_delivery_status_rank(s.current_status)), s.current_status
