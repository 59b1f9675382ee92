-- Flatten a Google Analytics 4 export in BigQuery, where the data lives, into one row per
-- page_view or purchase event. Save the result as Parquet (or CSV) and pass it to
--   python scripts/prepare_data.py data=ga4 data.path=<that file or folder> out_dir=<dir>
-- clickstream.ga4.load recognises this flat table by its columns (session_id, ...) and does the
-- rest locally: drops events without a session or page, orders page views by time, and credits
-- each purchase's revenue to the last page view of its session at or before it.
-- Replace the table and the date range; the public sample of the Google Merchandise Store is
-- `bigquery-public-data.ga4_obfuscated_sample_ecommerce.events_*` (20201101 .. 20210131).
-- clickstream.ga4.FLATTEN_SQL / SESSIONS_SQL are the same query in DuckDB's dialect.
-- To use another page parameter than page_location (load's page_field), change its key below
-- and name the output column after it.
WITH events AS (
  SELECT
    e.user_pseudo_id,
    e.event_timestamp,                                               -- microseconds, UTC
    e.event_name,
    (SELECT p.value.int_value FROM UNNEST(e.event_params) AS p
      WHERE p.key = 'ga_session_id' LIMIT 1)                         AS ga_session_id,
    (SELECT p.value.string_value FROM UNNEST(e.event_params) AS p
      WHERE p.key = 'page_location' LIMIT 1)                         AS page_location,
    (SELECT p.value.string_value FROM UNNEST(e.event_params) AS p
      WHERE p.key = 'page_title' LIMIT 1)                            AS page_title,
    (SELECT p.value.string_value FROM UNNEST(e.event_params) AS p
      WHERE p.key = 'content_group' LIMIT 1)                         AS content_group,
    e.ecommerce.purchase_revenue_in_usd                              AS purchase_revenue_in_usd
  FROM `project.dataset.events_*` AS e
  WHERE _TABLE_SUFFIX BETWEEN '20201101' AND '20210131'
),
sessions AS (
  SELECT
    *,
    -- NULL when either part is missing (consent-mode pings): the loader drops and counts those
    CONCAT(user_pseudo_id, '-', CAST(ga_session_id AS STRING))      AS session_id
  FROM events
),
with_start AS (
  SELECT
    *,
    -- the session starts with its first event of any kind (GA4 has no session start field)
    MIN(event_timestamp) OVER (PARTITION BY session_id)              AS session_start_us
  FROM sessions
)
SELECT
  session_id,
  user_pseudo_id                                                     AS visitor_id,
  session_start_us,
  event_timestamp,
  event_name,
  page_location,
  page_title,
  content_group,
  IF(event_name = 'purchase', purchase_revenue_in_usd, NULL)         AS revenue
FROM with_start
WHERE event_name IN ('page_view', 'purchase')
ORDER BY session_start_us, session_id, event_timestamp
