-- Flatten a Google Analytics 360 export in BigQuery, where the data lives, into one row per
-- page view. Save the result as Parquet (or CSV) and pass it to
--   python scripts/prepare_data.py data=ga360 data.path=<that file or folder> out_dir=<dir>
-- clickstream.ga360.load recognises this flat table by its columns.
-- Replace the table and the date range; the public sample is
-- `bigquery-public-data.google_analytics_sample.ga_sessions_*` (2016-08-01 .. 2017-08-01).
-- Only hits.type = 'PAGE' are page views: EVENT hits repeat the page path of the page they
-- happen on and would turn half of all transitions into self-loops.
SELECT
  CONCAT(s.fullVisitorId, '-', CAST(s.visitId AS STRING))          AS session_id,
  s.fullVisitorId                                                  AS visitor_id,
  s.visitStartTime                                                 AS session_start_s,
  h.hitNumber                                                      AS hit_number,
  s.visitStartTime * 1000 + h.time                                 AS hit_time_ms,
  h.page.pagePath                                                  AS page_path,
  h.page.pageTitle                                                 AS page_title,
  COALESCE(
    NULLIF(h.contentGroup.contentGroup1, '(not set)'),
    NULLIF(h.contentGroup.contentGroup2, '(not set)'),
    NULLIF(h.contentGroup.contentGroup3, '(not set)'),
    NULLIF(h.contentGroup.contentGroup4, '(not set)'),
    NULLIF(h.contentGroup.contentGroup5, '(not set)')
  )                                                                AS content_group,
  IFNULL(h.transaction.transactionRevenue, 0) / 1e6                AS revenue,
  h.transaction.transactionRevenue IS NOT NULL                     AS is_transaction
FROM `bigquery-public-data.google_analytics_sample.ga_sessions_*` AS s,
  UNNEST(s.hits) AS h
WHERE _TABLE_SUFFIX BETWEEN '20160801' AND '20170801'
  AND h.type = 'PAGE'
ORDER BY session_start_s, session_id, hit_number
