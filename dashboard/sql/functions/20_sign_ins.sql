-- Throttling of failed sign-ins (dashboard/signins.py), shared by every
-- server process through this table.
-- Installed after every migrate by config/sqlfunctions.py.

-- Count one sign-in attempt for p_key (a client network and a username) unless
-- p_limit attempts already fall within the last p_window: NULL when it is
-- counted and the password may be checked, else the seconds until the oldest
-- attempt that blocks it leaves the window.
--
-- The attempt is counted before the password is checked, under a lock of the
-- key held to the end of this short transaction: a burst of parallel guesses,
-- through any number of processes, gets exactly p_limit checks, where a count
-- written after each check would let every request of the burst through
-- before the first failure is recorded. A sign-in that succeeds deletes its
-- key's rows (tollgate_sign_in_succeeded).
--
-- Each call also deletes up to 100 rows that have left the window (any key;
-- SKIP LOCKED, so callers never wait on each other), which keeps the table to
-- about the attempts of one window however many keys a spray uses.
CREATE OR REPLACE FUNCTION tollgate_sign_in_attempt(p_key text, p_limit integer, p_window interval)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_count integer;
    v_blocking timestamptz;
BEGIN
    DELETE FROM dashboard_signinattempt WHERE id IN (
        SELECT id FROM dashboard_signinattempt
        WHERE at <= clock_timestamp() - p_window
        ORDER BY at LIMIT 100 FOR UPDATE SKIP LOCKED
    );
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate_sign_in ' || p_key, 0));
    v_now := clock_timestamp();
    SELECT count(*) INTO v_count FROM dashboard_signinattempt
    WHERE key = p_key AND at > v_now - p_window;
    IF v_count < p_limit THEN
        INSERT INTO dashboard_signinattempt (key, at) VALUES (p_key, v_now);
        RETURN NULL;
    END IF;
    -- A sliding window: one more attempt is allowed when the attempt that
    -- leaves p_limit - 1 newer ones behind it is out of the window.
    SELECT at INTO v_blocking FROM dashboard_signinattempt
    WHERE key = p_key AND at > v_now - p_window
    ORDER BY at OFFSET v_count - p_limit LIMIT 1;
    RETURN greatest(extract(epoch FROM v_blocking + p_window - v_now), 0.001);
END
$$;

-- A sign-in succeeded: its key starts afresh.
CREATE OR REPLACE FUNCTION tollgate_sign_in_succeeded(p_key text)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM dashboard_signinattempt WHERE key = p_key
$$;
