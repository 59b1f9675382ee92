-- Flatten a Google Analytics 360 BigQuery export (ga_sessions_*) into one row per page view.
-- DuckDB dialect; {source} is replaced by read_parquet(...) or read_json(...) of the export.
-- Output columns (the "flat GA360" table that clickstream.ga360.load also accepts directly):
--   session_id, visitor_id, session_start_s, hit_number, hit_time_ms, page_path, page_title,
--   content_group, revenue, is_transaction
-- Only hits.type = 'PAGE' are page views: EVENT hits repeat the page path of the page they
-- happen on and would turn half of all transitions into self-loops.
SELECT
    CAST(s.fullVisitorId AS VARCHAR) || '-' || CAST(s.visitId AS VARCHAR) AS session_id,
    CAST(s.fullVisitorId AS VARCHAR)                                      AS visitor_id,
    CAST(s.visitStartTime AS BIGINT)                                      AS session_start_s,
    CAST(h.hitNumber AS BIGINT)                                           AS hit_number,
    CAST(s.visitStartTime AS BIGINT) * 1000 + CAST(h."time" AS BIGINT)    AS hit_time_ms,
    CAST(h.page.pagePath AS VARCHAR)                                      AS page_path,
    CAST(h.page.pageTitle AS VARCHAR)                                     AS page_title,
    -- first content group that is set (GA writes '(not set)' for none)
    COALESCE(
        NULLIF(CAST(h.contentGroup.contentGroup1 AS VARCHAR), '(not set)'),
        NULLIF(CAST(h.contentGroup.contentGroup2 AS VARCHAR), '(not set)'),
        NULLIF(CAST(h.contentGroup.contentGroup3 AS VARCHAR), '(not set)'),
        NULLIF(CAST(h.contentGroup.contentGroup4 AS VARCHAR), '(not set)'),
        NULLIF(CAST(h.contentGroup.contentGroup5 AS VARCHAR), '(not set)')
    )                                                                     AS content_group,
    -- revenue is stored in micros (USD * 10^6); null on hits without a transaction, and on a
    -- transaction whose revenue is not a number (the loader refuses those, naming the hit)
    TRY_CAST(NULLIF(trim(CAST(h.transaction.transactionRevenue AS VARCHAR)), '') AS DOUBLE)
        / 1e6                                                             AS revenue,
    NULLIF(trim(CAST(h.transaction.transactionRevenue AS VARCHAR)), '') IS NOT NULL
                                                                          AS is_transaction
FROM {source} AS s, UNNEST(s.hits) AS t(h)
WHERE h.type = 'PAGE'
