-- The rate-limit budget shared by workers: one row per reservation of calls.
-- A reservation's calls are sent before `granted_at + hold` and so count
-- against the window until `counted_until` = that + the window.
CREATE TABLE ionflow_rate_grants (
    key           text NOT NULL,
    counted_until timestamptz NOT NULL,
    calls         integer NOT NULL CHECK (calls > 0)
);
CREATE INDEX ionflow_rate_grants_key ON ionflow_rate_grants (key, counted_until);

-- Grants up to p_wanted calls of p_key's budget of p_limit per window, in
-- one statement: workers asking at once queue on the key's advisory lock.
-- Returns the calls granted and, when none, the seconds until some free up.
CREATE FUNCTION ionflow_reserve_calls(
    p_key text, p_limit integer, p_window_secs double precision,
    p_hold_secs double precision, p_wanted integer)
RETURNS TABLE (granted integer, retry_secs double precision)
LANGUAGE plpgsql AS $$
DECLARE
    used integer;
    oldest timestamptz;
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('ionflow_rate:' || p_key, 0));
    DELETE FROM ionflow_rate_grants g
        WHERE g.key = p_key AND g.counted_until <= clock_timestamp();
    SELECT coalesce(sum(g.calls), 0), min(g.counted_until) INTO used, oldest
        FROM ionflow_rate_grants g WHERE g.key = p_key;
    n := least(p_wanted, p_limit - used);
    IF n > 0 THEN
        INSERT INTO ionflow_rate_grants (key, counted_until, calls)
            VALUES (p_key, clock_timestamp()
                + make_interval(secs => p_hold_secs + p_window_secs), n);
        RETURN QUERY SELECT n, 0::double precision;
    ELSE
        RETURN QUERY SELECT 0, greatest(
            extract(epoch FROM oldest - clock_timestamp())::double precision, 0.01);
    END IF;
END
$$;
